// The chat page: the OpenAI-compatible API of the same server, streamed with fetch and server-sent events.
"use strict";

const $ = (id) => document.getElementById(id);
// loaded: the listing's promise, the number of text models listed (null where it failed); images.js waits on it
const state = { messages: [], controller: null, audioModel: null, loaded: Promise.resolve(null) };

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
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

// What a refused request says: a 401 asks for the key; otherwise the server's error message.
async function failure(response) {
  if (response.status === 401) {
    askForKey();
    return apiKey()
      ? "The server refused this API key: check it under Access."
      : "This server needs an API key: enter it under Access.";
  }
  const body = await response.json().catch(() => ({}));
  return body.error ? body.error.message : `HTTP ${response.status}`;
}

function speakerOf(modelId) {
  const persona = modelId.includes("/") ? modelId.split("/")[1] : null;
  if (!persona) return "default persona";
  return persona.replace(/-/g, " ").replace(/\b\w/g, (c) => c.toUpperCase());
}

async function loadModels() {
  try {
    const answer = await fetch("/v1/models", { headers: withKey() });
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
}

function sampling() {
  const fields = {
    temperature: Number($("temperature").value),
    top_p: Number($("top-p").value),
    max_tokens: Number($("max-tokens").value),
  };
  const topK = Number($("top-k").value);
  if (topK > 0) fields.top_k = topK;
  if ($("seed").value !== "") fields.seed = Number($("seed").value);
  return fields;
}

function busy(on) {
  $("send").disabled = on;
  $("stop").hidden = !on;
  $("model").disabled = on;
}

// Reads "data: ..." events from a fetch body; calls onEvent with each parsed JSON object until [DONE].
async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
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
  controller: null,
};
window.antiphonSpeech = speech;

function speakSentence(sentence) {
  if (!sentence.trim() || !state.audioModel) return;
  if (!speech.context) speech.context = new AudioContext();
  const controller = speech.controller;
  speech.queue = speech.queue.then(async () => {
    if (controller.signal.aborted) return;
    const response = await fetch("/v1/audio/speech", {
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
      if (done) return;
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
    }
  }).catch((error) => {
    if (error.name !== "AbortError") showError(error.message);
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

async function send(text) {
  showError("");
  const model = $("model").value;
  localStorage.setItem("antiphon.model", model);
  const asked = addTurn("user", "You", text);
  state.messages.push({ role: "user", content: text });
  const turn = addTurn("assistant streaming", speakerOf(model), "");
  const out = turn.querySelector(".text");
  let reply = "";
  let unspoken = "";
  const speaking = $("speak").checked && state.audioModel !== null;
  state.controller = new AbortController();
  if (speaking) {
    if (speech.controller) speech.controller.abort();
    speech.controller = new AbortController();
    if (!speech.context) speech.context = new AudioContext(); // made in the click, so the browser lets it play
  }
  busy(true);
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: withKey({ "Content-Type": "application/json" }),
      body: JSON.stringify({ model, messages: state.messages, stream: true, ...sampling() }),
      signal: state.controller.signal,
    });
    if (!response.ok) throw new Error(await failure(response));
    let finish = null;
    await readEvents(response, (event) => {
      if (event.error) throw new Error(event.error.message);
      const choice = event.choices && event.choices[0];
      if (!choice) return;
      if (choice.delta && choice.delta.content) {
        reply += choice.delta.content;
        out.textContent = reply;
        if (speaking) {
          const [done, rest] = sentences(unspoken + choice.delta.content);
          unspoken = rest;
          done.forEach(speakSentence);
        }
        turn.scrollIntoView({ block: "end" });
      }
      if (choice.finish_reason) finish = choice.finish_reason;
    });
    if (finish === "length") note(turn, "cut at max tokens");
    if (speaking) speakSentence(unspoken);
  } catch (error) {
    if (error.name === "AbortError") {
      note(turn, "stopped");
    } else {
      showError(error.message);
      if (!reply) {
        turn.remove(); // the line was not answered: it leaves the conversation and goes back to the box
        asked.remove();
        state.messages.pop();
        $("message").value = text;
        $("hint").hidden = state.messages.length > 0;
      }
    }
  } finally {
    turn.classList.remove("streaming");
    if (reply) state.messages.push({ role: "assistant", content: reply });
    state.controller = null;
    busy(false);
  }
}

// Classify: the server's classifiers through POST /v1/classify (antiphon's own endpoint).
const classifiers = {};

async function loadClassifiers() {
  try {
    const answer = await fetch("/v1/classifiers", { headers: withKey() });
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

async function classify(input, fields) {
  showError("");
  const info = classifiers[input];
  try {
    const answer = await fetch("/v1/classify", {
      method: "POST",
      headers: withKey({ "Content-Type": "application/json" }),
      body: JSON.stringify({ model: info.id, top_k: 3, ...fields }),
    });
    if (!answer.ok) throw new Error(await failure(answer));
    const body = await answer.json();
    const list = $("labels");
    list.innerHTML = "";
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
    showError(error.message);
  }
}

function setUpDigit() {
  const canvas = $("digit");
  const pen = canvas.getContext("2d");
  const clear = () => { pen.fillStyle = "white"; pen.fillRect(0, 0, canvas.width, canvas.height); };
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
  });
  window.addEventListener("pointerup", () => { drawing = false; });
  $("digit-clear").addEventListener("click", clear);
  $("digit-go").addEventListener("click", () => {
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
    classify("tensor", { tensor: { shape: [8, 8], values } });
  });
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
    const pcm = new Int16Array(Math.min(length, context.sampleRate));
    let i = 0;
    for (const part of parts) for (const sample of part) if (i < pcm.length) pcm[i++] = Math.max(-1, Math.min(1, sample)) * 32767;
    const bytes = new Uint8Array(pcm.buffer);
    let binary = "";
    for (let j = 0; j < bytes.length; j += 0x8000) binary += String.fromCharCode(...bytes.subarray(j, j + 0x8000));
    await classify("audio", { audio: btoa(binary), audio_sample_rate: context.sampleRate });
    await context.close();
  } catch (error) {
    showError(`Microphone: ${error.message}`);
  } finally {
    button.textContent = "Record 1 s";
    button.disabled = false;
  }
}

function setUp() {
  for (const [id, out] of [["temperature", "temperature-value"], ["top-p", "top-p-value"]]) {
    $(id).addEventListener("input", () => { $(out).textContent = $(id).value; });
  }
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("message").value.trim();
    if (!text || state.controller) return;
    $("message").value = "";
    send(text);
  });
  $("message").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("stop").addEventListener("click", () => {
    if (state.controller) state.controller.abort();
    if (speech.controller) speech.controller.abort();
  });
  $("new-chat").addEventListener("click", () => {
    if (state.controller) state.controller.abort();
    state.messages = [];
    for (const turn of document.querySelectorAll(".turn")) turn.remove();
    $("hint").hidden = false;
    showError("");
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
  $("text-go").addEventListener("click", () => classify("text", { text: $("classify-input").value }));
  setUpDigit();
  loadKey();
  state.loaded = loadModels();
  loadClassifiers();
}

setUp();
