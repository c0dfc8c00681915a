// The chat page: the OpenAI-compatible API of the same server, streamed with fetch and server-sent events.
"use strict";

const $ = (id) => document.getElementById(id);
// loaded: the listing's promise, the number of text models listed (null where it failed); images.js waits on it
// messages: the conversation, each {role, content, speaker} (the speaker shown; the request sends role and content)
const state = { messages: [], controller: null, audioModel: null, loaded: Promise.resolve(null) };
window.antiphonChat = state;
const UNREACHABLE = "Cannot reach the server (is it running?)";
// The request's fields, by the control that sets each: a refusal naming one marks it.
const CHAT_FIELDS = {
  model: "model",
  temperature: "temperature",
  top_p: "top-p",
  top_k: "top-k",
  max_tokens: "max-tokens",
  seed: "seed",
  message: "message",
};

// Shows ``message`` under the conversation ("" hides it) and marks the field ``param`` names, if a chat one.
function showError(message, param = null) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
  for (const id of Object.values(CHAT_FIELDS)) {
    $(id).classList.remove("invalid");
    $(id).removeAttribute("aria-invalid");
  }
  const control = param && CHAT_FIELDS[param];
  if (control) {
    $(control).classList.add("invalid");
    $(control).setAttribute("aria-invalid", "true");
  }
}

// Says ``text`` to screen readers through #announce, a polite live region: ``more`` adds it to what the region holds
// (a reply's next sentence: only the addition is read) instead of replacing it. The turns themselves are in no live
// region: a reply rewritten at every token would be read again from its start at every token.
function announce(text, more = false) {
  const region = $("announce");
  if (!more) region.textContent = "";
  if (!text.trim()) return;
  const line = document.createElement("span");
  line.textContent = `${text.trim()} `;
  region.append(line);
}

// The API key of a server that asks for one (a 401 shows the Access section): kept for this tab only
// (sessionStorage), or in this browser (localStorage) when "Remember on this device" is ticked; sent on every
// request as Authorization: Bearer KEY.
const KEY_ITEM = "antiphon.apiKey";

function apiKey() {
  return $("api-key").value.trim();
}

function withKey(headers = {}) {
  const key = apiKey();
  return key ? { ...headers, Authorization: `Bearer ${key}` } : headers;
}

function loadKey() {
  const remembered = localStorage.getItem(KEY_ITEM);
  $("api-key").value = sessionStorage.getItem(KEY_ITEM) || remembered || "";
  $("remember-key").checked = remembered !== null;
  $("access").hidden = !apiKey();
}

function saveKey() {
  sessionStorage.removeItem(KEY_ITEM);
  localStorage.removeItem(KEY_ITEM);
  const key = apiKey();
  if (key) ($("remember-key").checked ? localStorage : sessionStorage).setItem(KEY_ITEM, key);
}

function askForKey() {
  $("access").hidden = false;
  $("access").classList.add("needed");
  $("api-key").focus();
}

// A refusal in words a person can act on: the server's message, and, where the server is busy (429) or the answer
// is none of its own (a proxy's 502 page), what happened and that trying again later may do.
function refusalText(response, body) {
  const said = body.error ? body.error.message : "";
  if (response.status === 429) {
    const wait = Number(response.headers.get("Retry-After"));
    const when = wait > 0 ? `in ${wait} s` : "in a moment";
    return `The server is busy: try again ${when}.${said ? ` (It said: ${said})` : ""}`;
  }
  if (said) return said;
  if (response.status >= 500) return `The server could not answer (HTTP ${response.status}): try again in a moment.`;
  return `The server refused the request (HTTP ${response.status}).`;
}

// What a refused request says: a 401 asks for the key; otherwise refusalText's words.
async function failure(response) {
  if (response.status === 401) {
    askForKey();
    return apiKey()
      ? "The server refused this API key: check it under Access."
      : "This server needs an API key: enter it under Access.";
  }
  const body = await response.json().catch(() => ({}));
  return refusalText(response, body);
}

// A refused request as an Error: its message (as failure's) and the field it names (OpenAI's error param), if any.
async function refusal(response) {
  if (response.status === 401) return new Error(await failure(response));
  const body = await response.json().catch(() => ({}));
  const error = new Error(refusalText(response, body));
  error.param = body.error ? body.error.param : null;
  return error;
}

// fetch, with a network failure told as one: the browser's own words ("Failed to fetch") say nothing.
async function request(url, options = {}) {
  try {
    return await fetch(url, options);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new Error(UNREACHABLE);
  }
}

// A whole number typed in a field, as written (it may pass 2**53), or "" where none is.
function typedInteger(id) {
  return $(id).value.trim().replace(/^0+(?=\d)/, "");
}

// JSON with ``fields``'s whole numbers written as typed: JSON.stringify would round one past 2**53. Anything else
// goes as JavaScript reads it, for the server to refuse by name.
function jsonBody(fields, integers) {
  const placeholders = {};
  const body = { ...fields };
  for (const [name, typed] of Object.entries(integers)) {
    if (typed === "") continue;
    if (/^\d+$/.test(typed)) {
      body[name] = `\u0000${name}`;
      placeholders[`"\\u0000${name}"`] = typed;
    } else {
      body[name] = Number(typed);
    }
  }
  let text = JSON.stringify(body);
  for (const [placeholder, typed] of Object.entries(placeholders)) text = text.replace(placeholder, typed);
  return text;
}

function speakerOf(modelId) {
  const persona = modelId.includes("/") ? modelId.split("/")[1] : null;
  if (!persona) return "default persona";
  return persona.replace(/-/g, " ").replace(/\b\w/g, (c) => c.toUpperCase());
}

async function loadModels() {
  try {
    const answer = await request("/v1/models", { headers: withKey() });
    if (!answer.ok) throw new Error(await failure(answer));
    const body = await answer.json();
    const select = $("model");
    select.innerHTML = "";
    const audio = body.data.find((m) => m.kind === "audio");
    state.audioModel = audio ? audio.id : null;
    $("speak-switch").hidden = !audio;
    body.data = body.data.filter((m) => m.kind === "text"); // audio speaks (above), images have their own tab
    for (const model of body.data) {
      const option = document.createElement("option");
      option.value = model.id;
      option.textContent = model.id.includes("/") ? speakerOf(model.id) : `${model.id} (default persona)`;
      select.append(option);
    }
    const saved = localStorage.getItem("antiphon.model");
    const firstPersona = body.data.find((m) => m.id.includes("/"));
    if (body.data.length) {
      select.value = saved && body.data.some((m) => m.id === saved) ? saved : (firstPersona || body.data[0]).id;
    }
    return body.data.length;
  } catch (error) {
    showError(`Cannot list the models: ${error.message}`);
    return null;
  }
}

function addTurn(role, speaker, text) {
  $("hint").hidden = true;
  const turn = document.createElement("div");
  turn.className = `turn ${role}`;
  const name = document.createElement("span");
  name.className = "speaker";
  name.textContent = speaker;
  const body = document.createElement("span");
  body.className = "text";
  body.dir = "auto"; // Hebrew or Arabic lays out right to left
  body.textContent = text;
  turn.append(name, body);
  $("conversation").append(turn);
  turn.scrollIntoView({ block: "end" });
  return turn;
}

function note(turn, text) {
  const line = document.createElement("div");
  line.className = "note";
  line.textContent = text;
  turn.append(line);
  announce(text, true);
  if (turn.isConnected) turn.scrollIntoView({ block: "end" }); // after the note, so it is not left under the composer
}

// The sampling knobs as the request's fields, and its whole numbers as typed (a seed may pass 2**53: jsonBody).
// Throws an Error naming the field (its param) where one holds what the server could not take.
function sampling() {
  const fields = { temperature: Number($("temperature").value), top_p: Number($("top-p").value) };
  const integers = {};
  const whole = (param, label, least, why) => {
    const typed = typedInteger(CHAT_FIELDS[param]);
    const bad = $(CHAT_FIELDS[param]).validity.badInput || (typed !== "" && !/^\d+$/.test(typed));
    if (bad || (typed !== "" && Number(typed) < least)) {
      const error = new Error(`${label}: ${why}.`);
      error.param = param;
      throw error;
    }
    return typed;
  };
  const maxTokens = whole("max_tokens", "Max tokens", 1, "a whole number from 1, or empty for the server's default");
  if (maxTokens !== "") integers.max_tokens = maxTokens;
  const topK = whole("top_k", "Top k", 0, "a whole number from 0 (0 or empty: no limit)");
  if (topK !== "" && topK !== "0") integers.top_k = topK;
  integers.seed = whole("seed", "Seed", 0, "a whole number from 0, or empty for a random one");
  return { fields, integers };
}

// The knobs of this tab, kept across a reload (sessionStorage), as the conversation is.
const KNOBS = ["temperature", "top-p", "top-k", "max-tokens", "seed"];
const CONVERSATION_ITEM = "antiphon.conversation";
const KNOBS_ITEM = "antiphon.sampling";

function saveConversation() {
  if (state.messages.length) sessionStorage.setItem(CONVERSATION_ITEM, JSON.stringify(state.messages));
  else sessionStorage.removeItem(CONVERSATION_ITEM);
}

function saveKnobs() {
  sessionStorage.setItem(KNOBS_ITEM, JSON.stringify(Object.fromEntries(KNOBS.map((id) => [id, $(id).value]))));
}

function restore() {
  try {
    const knobs = JSON.parse(sessionStorage.getItem(KNOBS_ITEM) || "{}");
    for (const id of KNOBS) if (typeof knobs[id] === "string") $(id).value = knobs[id];
    $("temperature-value").textContent = $("temperature").value;
    $("top-p-value").textContent = $("top-p").value;
    const messages = JSON.parse(sessionStorage.getItem(CONVERSATION_ITEM) || "[]");
    for (const { role, content, speaker } of messages) addTurn(role, speaker, content);
    state.messages = messages;
  } catch {
    sessionStorage.removeItem(CONVERSATION_ITEM); // unreadable: a new chat
  }
}

// Send and the model wait while a reply streams; Stop shows while a reply streams or speech is pending or playing.
// A control disabled or hidden under the focus would drop it to the page's start: Send's goes to Stop, and Stop's
// back to the line's box where a keyboard put it there (a tap on a phone is not moved: the box would open the
// on-screen keyboard when the reply ends), else to Send.
function busy() {
  const on = state.controller !== null;
  const had = document.activeElement;
  const keyed = had !== null && had.matches(":focus-visible"); // asked before hiding: a hidden element has lost its focus
  $("send").disabled = on;
  $("model").disabled = on;
  $("stop").hidden = !on && !speaking();
  if (had === $("send") && on) $("stop").focus();
  if (had === $("stop") && $("stop").hidden) $(keyed ? "message" : "send").focus();
}

// Reads "data: ..." events from a fetch body; calls onEvent with each parsed JSON object until [DONE]. A connection
// lost on the way throws an Error with ``lost`` set.
async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read().catch((error) => {
      if (error.name === "AbortError") throw error;
      throw Object.assign(new Error(UNREACHABLE), { lost: true });
    });
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of block.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        onEvent(JSON.parse(data));
      }
    }
  }
}

// Speech: each finished sentence of a reply is spoken by /v1/audio/speech (raw PCM16, streamed) and its samples
// are scheduled back to back on one AudioContext, so playback is gapless and starts while the text is written.
const speech = {
  context: null,
  next: 0, // the context time the next buffer starts at
  queue: Promise.resolve(), // sentences are spoken one after another
  scheduled: 0, // buffers scheduled so far (the tests read it)
  controller: null, // aborts this reply's speech requests
  pending: 0, // sentences queued or being spoken by the server
  sources: new Set(), // buffers scheduled and not yet ended
};
window.antiphonSpeech = speech;

function speaking() {
  return speech.pending > 0 || speech.sources.size > 0;
}

// Stop, New chat, Escape, unticking Speak: the pending speech requests are aborted and the audio scheduled is cut.
function stopSpeech() {
  if (speech.controller) speech.controller.abort();
  for (const source of speech.sources) source.stop();
  speech.sources.clear();
  speech.next = 0;
  busy();
}

function speakSentence(sentence) {
  const controller = speech.controller;
  // A sentence of no letter or digit ("...", a dash) has nothing to speak: the server refuses it by name.
  if (!/[\p{L}\p{N}]/u.test(sentence) || !state.audioModel || !controller || controller.signal.aborted) return;
  if (!speech.context) speech.context = new AudioContext();
  speech.pending += 1;
  busy();
  speech.queue = speech.queue.then(async () => {
    if (controller.signal.aborted) return;
    const response = await request("/v1/audio/speech", {
      method: "POST",
      headers: withKey({ "Content-Type": "application/json" }),
      body: JSON.stringify({ model: state.audioModel, input: sentence, response_format: "pcm" }),
      signal: controller.signal,
    });
    if (!response.ok) throw new Error(`speech: ${await failure(response)}`);
    const rate = Number(response.headers.get("X-Sample-Rate")) || 16000;
    const reader = response.body.getReader();
    let carry = new Uint8Array(0);
    for (;;) {
      const { value, done } = await reader.read();
      if (done || controller.signal.aborted) return;
      const bytes = new Uint8Array(carry.length + value.length);
      bytes.set(carry);
      bytes.set(value, carry.length);
      const whole = bytes.length - (bytes.length % 2);
      carry = bytes.slice(whole);
      if (whole === 0) continue;
      const pcm = new Int16Array(bytes.buffer.slice(0, whole));
      const buffer = speech.context.createBuffer(1, pcm.length, rate);
      const channel = buffer.getChannelData(0);
      for (let i = 0; i < pcm.length; i++) channel[i] = pcm[i] / 32768;
      const source = speech.context.createBufferSource();
      source.buffer = buffer;
      source.connect(speech.context.destination);
      speech.next = Math.max(speech.next, speech.context.currentTime + 0.05);
      source.start(speech.next);
      speech.next += buffer.duration;
      speech.scheduled += 1;
      speech.sources.add(source);
      source.addEventListener("ended", () => {
        speech.sources.delete(source);
        busy();
      });
    }
  }).catch((error) => {
    if (error.name !== "AbortError") showError(error.message);
  }).finally(() => {
    speech.pending -= 1;
    busy();
  });
}

// Splits finished sentences off ``pending``; returns [sentences, rest].
function sentences(pending) {
  const done = [];
  let start = 0;
  const ends = /[.!?;:]+["')\]]*\s+|\n/g;
  let match;
  while ((match = ends.exec(pending)) !== null) {
    done.push(pending.slice(start, match.index + match[0].length));
    start = match.index + match[0].length;
  }
  return [done, pending.slice(start)];
}

// Sends ``text`` with the sampling knobs (sampling()'s fields and integers) and streams the reply in.
async function send(text, { fields, integers }) {
  showError("");
  const model = $("model").value;
  localStorage.setItem("antiphon.model", model);
  // New chat replaces state.messages: this reply, however it ends, then touches only the conversation it was in.
  const history = state.messages;
  const asked = addTurn("user", "You", text);
  history.push({ role: "user", content: text, speaker: "You" });
  saveConversation();
  const speaker = speakerOf(model);
  const turn = addTurn("assistant streaming", speaker, "");
  const out = turn.querySelector(".text");
  let reply = "";
  let unspoken = "";
  // Screen readers hear the reply a sentence at a time (#announce), the first with the speaker's name, then how it
  // ended (note): ``unheard`` is its unfinished sentence.
  let unheard = "";
  let heard = 0;
  const hear = (sentence) => {
    if (sentence.trim()) announce(heard++ ? sentence : `${speaker}: ${sentence}`, true);
  };
  const heardAll = () => {
    hear(unheard);
    unheard = "";
  };
  announce("");
  const speaking = $("speak").checked && state.audioModel !== null;
  const controller = new AbortController();
  state.controller = controller;
  if (speaking) {
    stopSpeech();
    speech.controller = new AbortController();
    if (!speech.context) speech.context = new AudioContext(); // made in the click, so the browser lets it play
  }
  busy();
  try {
    const messages = history.map(({ role, content }) => ({ role, content }));
    const response = await request("/v1/chat/completions", {
      method: "POST",
      headers: withKey({ "Content-Type": "application/json" }),
      body: jsonBody({ model, messages, stream: true, ...fields }, integers),
      signal: controller.signal,
    });
    if (!response.ok) throw await refusal(response);
    let finish = null;
    await readEvents(response, (event) => {
      if (event.error) throw Object.assign(new Error(event.error.message), { param: event.error.param });
      const choice = event.choices && event.choices[0];
      if (!choice) return;
      if (choice.delta && choice.delta.content) {
        reply += choice.delta.content;
        out.textContent = reply;
        const [said, rest] = sentences(unheard + choice.delta.content);
        unheard = rest;
        said.forEach(hear);
        if (speaking && $("speak").checked) {
          const [done, rest] = sentences(unspoken + choice.delta.content);
          unspoken = rest;
          done.forEach(speakSentence);
        }
        turn.scrollIntoView({ block: "end" });
      }
      if (choice.finish_reason) finish = choice.finish_reason;
    });
    if (finish === null) throw Object.assign(new Error(UNREACHABLE), { lost: true }); // the stream ended early
    heardAll();
    if (finish === "length") note(turn, "cut at max tokens");
    if (speaking && $("speak").checked) speakSentence(unspoken);
  } catch (error) {
    heardAll();
    if (error.name === "AbortError") {
      note(turn, "stopped");
    } else if (error.lost && reply) {
      note(turn, "cut off: the connection was lost");
    } else if (history === state.messages) {
      showError(error.message, error.param);
      if (!reply) {
        turn.remove(); // the line was not answered: it leaves the conversation and goes back to the box
        asked.remove();
        history.pop();
        saveConversation();
        if (!$("message").value) $("message").value = text;
        $("hint").hidden = history.length > 0;
      }
    }
  } finally {
    turn.classList.remove("streaming");
    if (reply && history === state.messages) {
      history.push({ role: "assistant", content: reply, speaker });
      saveConversation();
    }
    if (state.controller === controller) state.controller = null;
    busy();
  }
}

// Stop (or Escape): the reply is aborted (the server frees its slot at the next step), and its speech stops.
function stopChat() {
  if (state.controller) state.controller.abort();
  stopSpeech();
}

// Classify: the server's classifiers through POST /v1/classify (antiphon's own endpoint).
const classifiers = {};

async function loadClassifiers() {
  try {
    const answer = await request("/v1/classifiers", { headers: withKey() });
    if (!answer.ok) return; // a 401 is told once, by the model list
    for (const info of (await answer.json()).data) {
      classifiers[info.input] = info;
      $(`classify-${{ audio: "word", tensor: "digit", text: "text" }[info.input]}`).hidden = false;
      $("classify").hidden = false;
    }
  } catch (error) {
    showError(`Cannot list the classifiers: ${error.message}`);
  }
}

// What each tool's labels are of, said above them.
const CLASSIFIED = { audio: "The word heard", tensor: "The digit drawn", text: "The passage" };

// The Classify panel's own message ("" hides it); a message replaces the labels shown.
function showClassifyError(message) {
  const box = $("classify-error");
  box.textContent = message;
  box.hidden = !message;
  if (message) {
    $("labels").innerHTML = "";
    $("labels-of").hidden = true;
  }
}

async function classify(input, fields, what = CLASSIFIED[input]) {
  showClassifyError("");
  const info = classifiers[input];
  try {
    const answer = await request("/v1/classify", {
      method: "POST",
      headers: withKey({ "Content-Type": "application/json" }),
      body: JSON.stringify({ model: info.id, top_k: 3, ...fields }),
    });
    if (!answer.ok) throw new Error(await failure(answer));
    const body = await answer.json();
    const list = $("labels");
    list.innerHTML = "";
    $("labels-of").textContent = `${what}, by ${info.id}:`;
    $("labels-of").hidden = false;
    for (const { label, probability } of body.labels) {
      const item = document.createElement("li");
      const name = document.createElement("span");
      name.className = "label";
      name.textContent = label;
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.style.width = `${Math.max(2, probability * 100)}%`;
      const value = document.createElement("span");
      value.textContent = `${Math.round(probability * 100)}%`;
      item.append(name, bar, value);
      list.append(item);
    }
  } catch (error) {
    showClassifyError(error.message);
  }
}

function setUpDigit() {
  const canvas = $("digit");
  const pen = canvas.getContext("2d");
  let inked = false; // a blank canvas is not classified
  const clear = () => {
    pen.fillStyle = "white";
    pen.fillRect(0, 0, canvas.width, canvas.height);
    inked = false;
  };
  clear();
  let drawing = false;
  const at = (event) => {
    const box = canvas.getBoundingClientRect();
    return [event.clientX - box.left, event.clientY - box.top];
  };
  canvas.addEventListener("pointerdown", (event) => { drawing = true; pen.beginPath(); pen.moveTo(...at(event)); });
  canvas.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    pen.lineWidth = 16;
    pen.lineCap = "round";
    pen.strokeStyle = "black";
    pen.lineTo(...at(event));
    pen.stroke();
    inked = true;
  });
  window.addEventListener("pointerup", () => { drawing = false; });
  $("digit-clear").addEventListener("click", clear);
  const classifyCanvas = (what) => {
    // 8x8 cells of ink, 0 (white) to 16 (black), as the digits the model learned from.
    const cell = canvas.width / 8;
    const pixels = pen.getImageData(0, 0, canvas.width, canvas.height).data;
    const values = [];
    for (let row = 0; row < 8; row++) {
      for (let col = 0; col < 8; col++) {
        let ink = 0;
        for (let y = row * cell; y < (row + 1) * cell; y++) {
          for (let x = col * cell; x < (col + 1) * cell; x++) ink += 255 - pixels[(y * canvas.width + x) * 4];
        }
        values.push(Math.min(16, (ink / (cell * cell * 255)) * 16 * 1.5));
      }
    }
    classify("tensor", { tensor: { shape: [8, 8], values } }, what);
  };
  $("digit-go").addEventListener("click", () => {
    if (!inked) {
      showClassifyError("Draw a digit first.");
      return;
    }
    classifyCanvas();
  });
  // A picture instead of drawing (and the keyboard's way in): fitted onto the pad in grey, dark ink on light
  // paper as the pad holds it (a light digit on a dark ground is turned round), then classified.
  $("digit-file").addEventListener("change", async (event) => {
    const file = event.target.files[0];
    event.target.value = ""; // the same file again is a new choice
    if (!file) return;
    let bitmap;
    try {
      bitmap = await createImageBitmap(file);
    } catch {
      showClassifyError(`${file.name}: not a picture this browser can read.`);
      return;
    }
    clear();
    const scale = Math.min(canvas.width / bitmap.width, canvas.height / bitmap.height);
    const [w, h] = [bitmap.width * scale, bitmap.height * scale];
    pen.drawImage(bitmap, (canvas.width - w) / 2, (canvas.height - h) / 2, w, h);
    bitmap.close();
    const image = pen.getImageData(0, 0, canvas.width, canvas.height);
    const px = image.data;
    const grey = (i) => 0.299 * px[i] + 0.587 * px[i + 1] + 0.114 * px[i + 2];
    let edge = 0; // the mean grey of the picture's border: its ground
    let count = 0;
    for (let i = 0; i < px.length; i += 4) {
      const x = (i / 4) % canvas.width;
      const y = Math.floor(i / 4 / canvas.width);
      if (x < 4 || y < 4 || x >= canvas.width - 4 || y >= canvas.height - 4) {
        edge += grey(i);
        count++;
      }
    }
    const invert = edge / count < 128;
    for (let i = 0; i < px.length; i += 4) {
      const g = invert ? 255 - grey(i) : grey(i);
      px[i] = px[i + 1] = px[i + 2] = g;
      px[i + 3] = 255;
    }
    pen.putImageData(image, 0, 0);
    inked = true;
    classifyCanvas(`The digit in ${file.name}`);
  });
}

// PCM16 little-endian of float samples in [-1, 1], as base64 (the JSON body's "audio").
function pcm16Base64(samples) {
  const pcm = new Int16Array(samples.length);
  for (let i = 0; i < samples.length; i++) pcm[i] = Math.max(-1, Math.min(1, samples[i])) * 32767;
  const bytes = new Uint8Array(pcm.buffer);
  let binary = "";
  for (let j = 0; j < bytes.length; j += 0x8000) binary += String.fromCharCode(...bytes.subarray(j, j + 0x8000));
  return btoa(binary);
}

async function recordWord() {
  const button = $("record");
  button.disabled = true;
  try {
    const media = await navigator.mediaDevices.getUserMedia({ audio: true });
    const context = new AudioContext();
    const source = context.createMediaStreamSource(media);
    const tap = context.createScriptProcessor(4096, 1, 1);
    const parts = [];
    let length = 0;
    await new Promise((resolve) => {
      tap.onaudioprocess = (event) => {
        const block = event.inputBuffer.getChannelData(0);
        parts.push(new Float32Array(block));
        length += block.length;
        if (length >= context.sampleRate) resolve();
      };
      source.connect(tap);
      tap.connect(context.destination);
      button.textContent = "Listening…";
    });
    source.disconnect();
    tap.disconnect();
    media.getTracks().forEach((track) => track.stop());
    const second = new Float32Array(Math.min(length, context.sampleRate));
    let i = 0;
    for (const part of parts) for (const sample of part) if (i < second.length) second[i++] = sample;
    await classify("audio", { audio: pcm16Base64(second), audio_sample_rate: context.sampleRate });
    await context.close();
  } catch (error) {
    showClassifyError(`Microphone: ${error.message}`);
  } finally {
    button.textContent = "Record 1 s";
    button.disabled = false;
  }
}

// A recording instead of the microphone: any format the browser decodes (WAV, Ogg, FLAC, MP3...), its channels
// mixed and resampled to 16 kHz here; the server hears its loudest second.
async function openRecording(event) {
  const file = event.target.files[0];
  event.target.value = ""; // the same file again is a new choice
  if (!file) return;
  let audio;
  try {
    audio = await new OfflineAudioContext(1, 1, 16000).decodeAudioData(await file.arrayBuffer());
  } catch {
    showClassifyError(`${file.name}: not a recording this browser can read.`);
    return;
  }
  const mono = new Float32Array(audio.length);
  for (let c = 0; c < audio.numberOfChannels; c++) {
    const channel = audio.getChannelData(c);
    for (let i = 0; i < mono.length; i++) mono[i] += channel[i] / audio.numberOfChannels;
  }
  const pcm = mono.length > MAX_AUDIO_SECONDS * audio.sampleRate ? loudestSecond(mono, audio.sampleRate) : mono;
  await classify("audio", { audio: pcm16Base64(pcm), audio_sample_rate: audio.sampleRate }, `The word in ${file.name}`);
}

// The server hears at most 30 s and takes their loudest second; of a longer recording that second is chosen here
// the same way (250 ms steps), so the upload stays small.
const MAX_AUDIO_SECONDS = 30;
function loudestSecond(samples, rate) {
  const sums = new Float64Array(samples.length + 1);
  for (let i = 0; i < samples.length; i++) sums[i + 1] = sums[i] + samples[i] * samples[i];
  let best = 0;
  for (let start = 0; start + rate <= samples.length; start += rate / 4) {
    if (sums[start + rate] - sums[start] > sums[best + rate] - sums[best]) best = start;
  }
  return samples.subarray(best, best + rate);
}

function classifyText() {
  const text = $("classify-input").value;
  if (!text.trim()) {
    showClassifyError("Paste a passage first.");
    return;
  }
  classify("text", { text });
}

function newChat() {
  stopChat();
  state.messages = []; // a reply still ending keeps to the conversation it was in (send)
  saveConversation();
  for (const turn of document.querySelectorAll(".turn")) turn.remove();
  $("hint").hidden = false;
  showError("");
}

function setUp() {
  for (const [id, out] of [["temperature", "temperature-value"], ["top-p", "top-p-value"]]) {
    $(id).addEventListener("input", () => { $(out).textContent = $(id).value; });
  }
  for (const id of KNOBS) $(id).addEventListener("input", saveKnobs);
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    if (state.controller) return;
    const text = $("message").value.trim();
    if (!text) {
      showError("Type a message first.", "message");
      $("message").focus();
      return;
    }
    let knobs;
    try {
      knobs = sampling();
    } catch (error) {
      showError(error.message, error.param); // the line stays in the box
      return;
    }
    $("message").value = "";
    saveKnobs();
    send(text, knobs);
  });
  $("message").addEventListener("keydown", (event) => {
    // Enter sends, Shift+Enter starts a new line; an Enter that ends an input method's composition (Japanese,
    // Chinese, Korean) only picks the word.
    if (event.isComposing || event.keyCode === 229) return;
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  for (const id of ["chat-settings", "composer"]) {
    $(id).addEventListener("input", (event) => {
      if (event.target.classList.contains("invalid")) showError("");
    });
  }
  $("stop").addEventListener("click", stopChat);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !$("chat-panel").hidden) stopChat();
  });
  $("new-chat").addEventListener("click", newChat);
  $("speak").addEventListener("change", () => {
    if (!$("speak").checked) stopSpeech();
  });
  $("model").addEventListener("change", () => localStorage.setItem("antiphon.model", $("model").value));
  $("api-key").addEventListener("change", () => {
    saveKey();
    $("access").classList.remove("needed");
    showError("");
    state.loaded = loadModels();
    loadClassifiers();
  });
  $("remember-key").addEventListener("change", saveKey);
  $("record").addEventListener("click", recordWord);
  $("word-file").addEventListener("change", openRecording);
  $("text-go").addEventListener("click", classifyText);
  setUpDigit();
  loadKey();
  restore();
  state.loaded = loadModels();
  loadClassifiers();
}

setUp();
