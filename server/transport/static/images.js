// The Images tab: the server's image models through OpenAI's images API (the same HTTP API the chat uses), streamed:
// POST /v1/images/generations for the generators (an RBM's Gibbs chain and a latent walk show their frames as the
// server makes them, as partial images; a generator's one sample shows when made), and POST /v1/images/edits for
// Deep Dream on an uploaded image. Uses chat.js's $, announce, withKey, failure, refusal, request, typedInteger,
// jsonBody, readEvents and state.
"use strict";

const FAMILY_NAMES = { dcgan: "DCGAN", vae: "VAE", vaegan: "VAE-GAN", rbm: "RBM", dream: "Deep Dream" };
const VIEW_PX = 288; // the viewer's side: the image scaled by the largest whole factor that fits
const HISTORY_SIZE = 24;
const EMPTY_HINT = "Pick a model, then Generate: the frames show here as they are made.";
// The request's fields, by the form control that sets each: a refusal naming one marks it.
const FIELD_CONTROLS = {
  model: "image-model",
  prompt: "image-class", // Deep Dream's prompt is its target class: image-target (fieldControl)
  seed: "image-seed",
  steps: "image-steps",
  partial_images: "image-partials",
  frame_every: "image-every",
  walk_to_seed: "image-walk-to",
  walk_frames: "image-walk-frames",
  image: "image-file",
  layer: "image-layer",
  target: "image-target",
  octaves: "image-octaves",
};
const LATENT_FAMILIES = ["dcgan", "vae", "vaegan"];
const DEFAULT_STEPS = { rbm: 50, dream: 10 }; // the server's defaults: Gibbs steps, dream steps per octave

const images = {
  models: new Map(), // id -> the row of GET /v1/images/models
  controller: null, // the running request's AbortController
  results: [], // the images made, newest first (the history strip)
  shown: null, // the result in the viewer
  download: null, // the object URL the Download link points at
  log: [], // every frame drawn, in order: {model, step, final, at: performance.now()} (the tests read it)
  family: null, // the family the form was last set for
  preview: null, // the object URL of the image to dream on's preview
};
window.antiphonImages = images;

function showImageError(message, param = null) {
  const box = $("image-error");
  box.textContent = message;
  box.hidden = !message;
  for (const id of Object.values(FIELD_CONTROLS)) {
    $(id).classList.remove("invalid");
    $(id).removeAttribute("aria-invalid");
  }
  const control = param && fieldControl(param);
  if (control) {
    $(control).classList.add("invalid");
    $(control).setAttribute("aria-invalid", "true");
  }
}

// -- the models ---------------------------------------------------------------------------------------------------
function familyName(info) {
  return FAMILY_NAMES[info.family] || info.family;
}

function conditional(info) {
  return info.family !== "dream" && info.labels.length > 0;
}

function fieldControl(param) {
  const info = images.models.get($("image-model").value);
  if (param === "prompt" && info && info.family === "dream") return "image-target";
  return FIELD_CONTROLS[param];
}

function fillSelect(select, values, labels = values) {
  const before = select.value;
  select.innerHTML = "";
  values.forEach((value, i) => {
    const option = document.createElement("option");
    option.value = value;
    option.textContent = labels[i];
    select.append(option);
  });
  if (values.includes(before)) select.value = before;
}

async function loadImageModels() {
  try {
    const answer = await request("/v1/images/models", { headers: withKey() });
    if (!answer.ok) return []; // a 401 is told once, by the model list; a server without the listing serves none
    const rows = (await answer.json()).data;
    const select = $("image-model");
    const before = select.value || localStorage.getItem("antiphon.imageModel");
    select.innerHTML = "";
    images.models.clear();
    for (const info of rows) {
      images.models.set(info.id, info);
      const option = document.createElement("option");
      option.value = info.id;
      option.textContent = `${info.id} (${familyName(info)})`;
      select.append(option);
    }
    const preferred = rows.find((m) => m.id === before) || rows.find((m) => m.family !== "dream") || rows[0];
    if (preferred) select.value = preferred.id;
    modelChosen();
    return rows;
  } catch (error) {
    showImageError(`Cannot list the image models: ${error.message}`);
    return [];
  }
}

// The form follows the model: its description, its classes, and the knobs its family reads.
function modelChosen() {
  const info = images.models.get($("image-model").value);
  if (!info) return;
  localStorage.setItem("antiphon.imageModel", info.id);
  const side = `${info.image_size}x${info.image_size}`;
  $("image-about").textContent = `${familyName(info)}: ${info.description}.`;
  const classes = $("image-class");
  classes.innerHTML = "";
  $("image-class-field").hidden = !conditional(info);
  if (conditional(info)) {
    const any = document.createElement("option");
    any.value = "";
    any.textContent = "any (the seed's)";
    classes.append(any);
    for (const label of info.labels) {
      const option = document.createElement("option");
      option.value = label;
      option.textContent = label;
      classes.append(option);
    }
  }
  const family = info.family;
  const chain = family === "rbm";
  const dream = family === "dream";
  if (family !== images.family && DEFAULT_STEPS[family]) $("image-steps").value = String(DEFAULT_STEPS[family]);
  images.family = family;
  $("image-steps-field").hidden = !chain && !dream;
  $("image-steps-name").textContent = dream ? "Steps per octave" : "Gibbs steps";
  $("image-steps").max = info.max_steps || "";
  $("image-walk-field").hidden = !LATENT_FAMILIES.includes(family);
  $("image-walk-frames").max = info.max_walk_frames || "";
  $("image-dream-fields").hidden = !dream;
  if (dream) {
    fillSelect($("image-layer"), info.layers);
    if (!$("image-layer").dataset.chosen && info.layers.includes("block2")) $("image-layer").value = "block2";
    fillSelect($("image-target"), info.labels);
  }
  $("image-generate").disabled = images.controller !== null;
  knobsShown();
  $("image-note").textContent = dream
    ? `Each frame is one gradient step of the dream on your image (octaves of steps, each a larger scale); ${side} ` +
      "pixels."
    : chain
      ? `Each frame is one block Gibbs step of the chain, from noise; ${side} pixels.`
      : `One sample of the model, ${side} pixels; a new seed, a new image (a walk: frames from one seed to another).`;
  showImageError("");
}

// The knobs that depend on others: a walk's seed and frames, the target class of the logits layer, the frames on the
// way (OpenAI's partial images) where no frame_every is set.
function knobsShown() {
  const info = images.models.get($("image-model").value);
  if (!info) return;
  const walk = LATENT_FAMILIES.includes(info.family) && $("image-walk").checked;
  const frames = info.family === "rbm" || info.family === "dream";
  $("image-walk-knobs").hidden = !walk;
  $("image-target-field").hidden = !(info.family === "dream" && $("image-layer").value === "logits");
  $("image-every-field").hidden = !frames && !walk;
  $("image-partials-field").hidden = !frames;
  $("image-partials").disabled = $("image-every").value.trim() !== "";
  $("image-use-shown").disabled = !(images.shown && images.shown.final) || images.controller !== null;
}

// The image to dream on: its preview beside the file field.
function fileChosen() {
  const file = $("image-file").files[0];
  if (images.preview) URL.revokeObjectURL(images.preview);
  images.preview = file ? URL.createObjectURL(file) : null;
  $("image-file-preview").hidden = !file;
  if (file) $("image-file-preview").src = images.preview;
}

function setFile(file) {
  const files = new DataTransfer();
  files.items.add(file);
  $("image-file").files = files.files;
  fileChosen();
}

// Dream on the image in the viewer (its last frame, as the server made it).
function useShown() {
  const result = images.shown;
  if (!result || !result.final) return;
  setFile(new File([result.final], fileName(result), { type: "image/png" }));
  showImageError("");
}

// -- frames -------------------------------------------------------------------------------------------------------
// The steps of a chain sent as partial images: the server's spacing (server/transport/openai.py partial_steps, with
// Python's round half to even), so each partial image's index tells its step.
function roundHalfEven(x) {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

function partialSteps(total, partials) {
  const steps = new Set();
  for (let j = 0; j < partials; j++) steps.add(roundHalfEven((total * (j + 1)) / (partials + 1)) - 1);
  return [...steps].filter((s) => s >= 0 && s < total - 1).sort((a, b) => a - b);
}

function randomSeed() {
  return String(crypto.getRandomValues(new Uint32Array(1))[0]);
}

function className(result) {
  const info = images.models.get(result.model);
  if (!info || !conditional(info)) return "";
  if (result.label) return result.label;
  // the server's choice: the seed's class (seeds go up to 2**63 - 1, past a Number's whole values)
  return /^\d+$/.test(result.seed) ? info.labels[Number(BigInt(result.seed) % BigInt(info.labels.length))] : "";
}

function describe(result) {
  const parts = [result.model];
  const label = className(result);
  if (label) parts.push(result.label ? label : `${label} (the seed's)`);
  else if (conditional(images.models.get(result.model) || { labels: [] })) parts.push("the seed's class");
  if (result.dream) parts.push(result.dream.target ? `toward ${result.dream.target}` : `layer ${result.dream.layer}`);
  parts.push(result.walkTo !== null ? `seed ${result.seed} → ${result.walkTo}` : `seed ${result.seed}`);
  return parts.join(" · ");
}

function stepText(result, frame) {
  const of = `${frame.step + 1} of ${result.total}`;
  if (result.family === "rbm") return `Gibbs step ${of}`;
  if (result.dream) return `dream step ${of}`;
  if (result.walkTo !== null) return `point ${of}`;
  return "sample";
}

function fileName(result) {
  const slug = (text) => text.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "");
  const label = result.dream ? result.dream.target || result.dream.layer : className(result);
  const walk = result.walkTo !== null ? `-to${result.walkTo}-${result.total}frames` : "";
  const steps = result.family === "rbm" || result.dream ? `-${result.total}steps` : "";
  return `${result.model}${label ? `-${slug(label)}` : ""}-seed${result.seed}${walk}${steps}.png`;
}

function pngBlob(b64) {
  const binary = atob(b64);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return new Blob([bytes], { type: "image/png" });
}

function thumbnail(src, caption, title, onPick) {
  const item = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.title = title;
  button.setAttribute("aria-label", title);
  const image = document.createElement("img");
  image.src = src;
  image.alt = "";
  button.append(image);
  if (caption) {
    const text = document.createElement("span");
    text.textContent = caption;
    button.append(text);
  }
  button.addEventListener("click", onPick);
  item.append(button);
  return item;
}

function showFrame(result, frame) {
  const view = $("image-view");
  const scale = Math.max(1, Math.floor(VIEW_PX / result.side));
  view.style.width = view.style.height = `${result.side * scale}px`;
  view.src = frame.url;
  view.alt = `${describe(result)}, ${stepText(result, frame)}`;
  view.hidden = false;
  view.classList.remove("waiting");
  $("image-empty").hidden = true;
  for (const item of $("image-frames").children) item.classList.toggle("current", item.frame === frame);
}

function caption(result, text) {
  $("image-caption").textContent = `${describe(result)}: ${text}`;
}

// Draws ``frame`` of ``result``: the viewer, its thumbnail on the frames strip, the progress bar.
function drawFrame(result, frame) {
  const item = thumbnail(frame.url, result.total > 1 ? `${frame.step + 1}` : "", stepText(result, frame), () => {
    showFrame(result, frame);
    caption(result, stepText(result, frame));
  });
  item.frame = frame;
  $("image-frames").append(item);
  $("frames-section").hidden = result.frames.length < 2;
  showFrame(result, frame);
  const progress = $("image-progress");
  progress.hidden = result.total < 2;
  if (Number.isFinite(result.total) && Number.isFinite(frame.step)) {
    progress.max = result.total;
    progress.value = frame.step + 1;
  }
}

// An empty viewer saying ``text``.
function blank(text) {
  images.shown = null;
  $("image-view").hidden = true;
  $("image-empty").textContent = text;
  $("image-empty").hidden = false;
  $("image-caption").textContent = "";
  $("image-progress").hidden = true;
  $("image-frames").innerHTML = "";
  $("frames-section").hidden = true;
  $("image-download").hidden = true;
}

// The viewer, the frames strip, the caption and the Download link show ``result``.
function showResult(result) {
  images.shown = result;
  $("image-frames").innerHTML = "";
  result.frames.forEach((frame) => drawFrame(result, frame));
  finishShown(result);
}

function finishShown(result) {
  const last = result.frames[result.frames.length - 1];
  knobsShown();
  const link = $("image-download");
  if (images.download) URL.revokeObjectURL(images.download);
  images.download = null;
  link.hidden = !result.final;
  if (result.final) {
    images.download = URL.createObjectURL(result.final);
    link.href = images.download;
    link.download = fileName(result);
    link.title = `${fileName(result)}: ${result.side}x${result.side} pixels, 8-bit grey`;
  }
  if (!last) return;
  const took = result.seconds !== null ? ` in ${result.seconds.toFixed(2)} s` : "";
  caption(result, result.final ? `${stepText(result, last)}, done${took}` : `stopped at ${stepText(result, last)}`);
}

function remember(result) {
  images.results.unshift(result);
  images.results.length = Math.min(images.results.length, HISTORY_SIZE);
  const strip = $("image-history");
  const last = result.frames[result.frames.length - 1];
  strip.prepend(thumbnail(last.url, "", describe(result), () => {
    if (images.controller) return;
    pick(result);
  }));
  while (strip.children.length > HISTORY_SIZE) strip.lastChild.remove();
  $("history-section").hidden = false;
}

// A result picked from the history: shown, and the form set to make it again.
function pick(result) {
  if (images.models.has(result.model)) {
    $("image-model").value = result.model;
    modelChosen();
    $("image-class").value = result.label;
    $("image-seed").value = String(result.seed);
    $("image-steps").value = String(result.steps || DEFAULT_STEPS[result.family] || "");
    $("image-every").value = result.every ? String(result.every) : "";
    $("image-walk").checked = result.walkTo !== null;
    if (result.walkTo !== null) {
      $("image-walk-to").value = result.walkTo;
      $("image-walk-frames").value = String(result.total);
    }
    if (result.dream) {
      $("image-layer").value = result.dream.layer;
      $("image-target").value = result.dream.target || $("image-target").value;
      $("image-octaves").value = String(result.dream.octaves);
      if (result.dream.file) setFile(result.dream.file);
    }
    knobsShown();
  }
  showResult(result);
}

// -- a request ----------------------------------------------------------------------------------------------------
function imagesBusy(on) {
  const hadFocus = document.activeElement;
  $("image-generate").disabled = on;
  $("image-model").disabled = on;
  $("image-use-shown").disabled = on || !(images.shown && images.shown.final);
  $("image-stop").hidden = !on;
  if (on && hadFocus === $("image-generate")) $("image-stop").focus();
  if (!on && (hadFocus === $("image-stop") || hadFocus === document.body)) $("image-generate").focus();
}

// The request for ``info``'s form: generations (JSON) or, for Deep Dream, edits (a multipart form), and the result
// it will make.
function imageRequest(info) {
  const seed = typedInteger("image-seed") || randomSeed();
  const family = info.family;
  const chain = family === "rbm";
  const dream = family === "dream";
  const walk = LATENT_FAMILIES.includes(family) && $("image-walk").checked;
  const every = chain || dream || walk ? typedInteger("image-every") : "";
  const partials = (chain || dream) && every === "" ? Number($("image-partials").value) : 0;
  const steps = chain || dream ? Number($("image-steps").value) || DEFAULT_STEPS[family] : 0;
  const result = {
    model: info.id, family, label: conditional(info) ? $("image-class").value : "", seed, side: info.image_size,
    // frame_every 0 is every frame, as 1 is (a negative one is the server's to refuse)
    total: 1, steps, every: every === "" ? (walk ? 1 : null) : Number(every) || 1, walkTo: null, dream: null,
    frames: [], final: null, seconds: null,
  };
  if (chain) result.total = steps;
  if (walk) {
    result.walkTo = typedInteger("image-walk-to") || randomSeed();
    result.total = Number($("image-walk-frames").value) || 16;
  }
  if (dream) {
    const layer = $("image-layer").value;
    const octaves = Number($("image-octaves").value) || 3;
    const target = layer === "logits" ? $("image-target").value : "";
    result.dream = { layer, target, octaves, file: $("image-file").files[0] || null };
    result.total = steps * octaves;
    const form = new FormData();
    form.append("model", info.id);
    form.append("prompt", target); // OpenAI's prompt: the class to dream toward, or empty
    form.append("layer", layer);
    form.append("octaves", $("image-octaves").value.trim());
    form.append("steps", $("image-steps").value.trim());
    form.append("seed", seed);
    form.append("stream", "true");
    if (every !== "") form.append("frame_every", every);
    else form.append("partial_images", String(partials));
    if (result.dream.file) form.append("image", result.dream.file, result.dream.file.name);
    return { url: "/v1/images/edits", body: form, headers: withKey(), result, partials };
  }
  const fields = { model: info.id, prompt: result.label, stream: true };
  const integers = { seed };
  if (chain) integers.steps = $("image-steps").value.trim();
  if (every !== "") integers.frame_every = every;
  else if (chain) fields.partial_images = partials;
  if (walk) {
    integers.walk_to_seed = result.walkTo;
    integers.walk_frames = $("image-walk-frames").value.trim();
  }
  const headers = withKey({ "Content-Type": "application/json" });
  return { url: "/v1/images/generations", body: jsonBody(fields, integers), headers, result, partials };
}

async function generateImage() {
  const info = images.models.get($("image-model").value);
  if (images.controller || !info) return;
  showImageError("");
  const { url, body, headers, result, partials } = imageRequest(info);
  const partialAt = partialSteps(result.total, partials);
  const previous = images.shown; // shown, dimmed, until the first frame comes (and again if none does)
  images.shown = result;
  $("image-view").classList.add("waiting");
  $("image-frames").innerHTML = "";
  $("frames-section").hidden = true;
  $("image-download").hidden = true;
  caption(result, result.dream ? "dreaming…" : result.family === "rbm" ? "the chain runs…" : "sampling…");
  images.controller = new AbortController();
  announce("");
  imagesBusy(true);
  const started = performance.now();
  let stopped = false;
  try {
    const response = await request(url, { method: "POST", headers, body, signal: images.controller.signal });
    if (!response.ok) throw await refusal(response);
    await readEvents(response, (event) => {
      if (event.error) {
        const error = new Error(event.error.message);
        error.param = event.error.param;
        throw error;
      }
      const kind = event.type ? event.type.replace(/^image_(generation|edit)\./, "") : "";
      const final = kind === "completed";
      if (!final && kind !== "partial_image") return;
      const index = event.partial_image_index;
      const at = final ? result.total - 1 : result.every ? index * result.every : partialAt[index];
      const step = Number.isFinite(at) ? at : index;
      const frame = { step, final, url: `data:image/png;base64,${event.b64_json}` };
      if (final) {
        result.final = pngBlob(event.b64_json);
        result.seconds = (performance.now() - started) / 1000;
      }
      result.frames.push(frame);
      drawFrame(result, frame);
      caption(result, stepText(result, frame));
      images.log.push({ model: result.model, step, final, at: performance.now() });
    });
    if (!result.final) throw new Error("The stream ended before the last frame.");
    remember(result);
  } catch (error) {
    stopped = error.name === "AbortError";
    if (!stopped) showImageError(error.message, error.param || null);
  } finally {
    images.controller = null;
    try {
      if (result.frames.length) {
        finishShown(result);
      } else if (stopped || !previous) {
        blank(stopped ? "Stopped before the first frame." : EMPTY_HINT);
      } else {
        showResult(previous); // refused: the image before stays, and the error says why
      }
      // Screen readers hear the image once made or stopped, not each frame's caption (a refusal is an alert)
      if (result.final || stopped) {
        announce(result.frames.length ? $("image-caption").textContent : $("image-empty").textContent);
      }
    } finally {
      imagesBusy(false); // whatever the viewer made of it, the form is free again
    }
  }
}

function stopImage() {
  if (images.controller) images.controller.abort();
}

// -- tabs ---------------------------------------------------------------------------------------------------------
// Chat and Images are tabs (WAI-ARIA's tab pattern: arrow keys, Home and End move between them); the settings
// column shows the chosen one's knobs, and Access for both.
function selectTab(name, focus = false) {
  for (const [tab, panel, knobs, tools] of [
    ["tab-chat", "chat-panel", "chat-settings", "chat-tools"],
    ["tab-images", "images-panel", "image-form", null],
  ]) {
    const chosen = tab === `tab-${name}`;
    $(tab).setAttribute("aria-selected", String(chosen));
    $(tab).tabIndex = chosen ? 0 : -1;
    $(panel).hidden = !chosen;
    $(knobs).hidden = !chosen;
    if (tools) $(tools).hidden = !chosen;
    if (chosen && focus) $(tab).focus();
  }
  localStorage.setItem("antiphon.tab", name);
}

function tabKeys(event) {
  const tabs = [...document.querySelectorAll('#tabs [role="tab"]')].filter((tab) => !tab.hidden);
  const at = tabs.indexOf(document.activeElement);
  const to = { ArrowRight: at + 1, ArrowLeft: at - 1, Home: 0, End: tabs.length - 1 }[event.key];
  if (at < 0 || to === undefined) return;
  event.preventDefault();
  const tab = tabs[(to + tabs.length) % tabs.length];
  selectTab(tab.id.replace("tab-", ""), true);
}

// The tabs follow what the server serves: no image model, no tabs (the chat alone, as before); image models but
// no text model, the Images tab alone.
async function arrangeTabs() {
  const [textModels, imageModels] = await Promise.all([state.loaded, loadImageModels()]);
  const hasImages = imageModels.length > 0;
  const imagesOnly = hasImages && textModels === 0;
  $("tabs").hidden = !hasImages;
  $("tab-chat").hidden = imagesOnly;
  const wanted = imagesOnly || (hasImages && localStorage.getItem("antiphon.tab") === "images") ? "images" : "chat";
  selectTab(wanted);
}

function setUpImages() {
  $("tab-chat").addEventListener("click", () => selectTab("chat"));
  $("tab-images").addEventListener("click", () => selectTab("images"));
  $("tabs").addEventListener("keydown", tabKeys);
  $("image-model").addEventListener("change", modelChosen);
  $("image-walk").addEventListener("change", knobsShown);
  $("image-every").addEventListener("input", knobsShown);
  $("image-layer").addEventListener("change", () => {
    $("image-layer").dataset.chosen = "yes";
    knobsShown();
  });
  $("image-file").addEventListener("change", fileChosen);
  $("image-use-shown").addEventListener("click", useShown);
  $("image-form").addEventListener("submit", (event) => {
    event.preventDefault();
    generateImage();
  });
  $("image-form").addEventListener("input", (event) => {
    if (event.target.classList.contains("invalid")) showImageError("");
  });
  $("image-dice").addEventListener("click", () => { $("image-seed").value = randomSeed(); });
  $("image-stop").addEventListener("click", stopImage);
  $("images-panel").addEventListener("keydown", (event) => {
    if (event.key === "Escape") stopImage();
  });
  $("image-form").addEventListener("keydown", (event) => {
    if (event.key === "Escape") stopImage();
  });
  $("api-key").addEventListener("change", arrangeTabs); // after chat.js's own handler: state.loaded is the new list
  arrangeTabs();
}

setUpImages();
