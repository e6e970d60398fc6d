// The upscale view: pick files, choose options, upload, start, watch, compare.

import { api, ApiError } from "./api.js";
import { $, announce, h } from "./dom.js";
import { inspectFile, refusal, refusalSentence } from "./inspect.js";
import { explain, formatBytes, sentence } from "./messages.js";
import { watchTask } from "./poll.js";
import { resultList } from "./results.js";
import { uploadFile } from "./upload.js";

const UPLOAD_CONCURRENCY = 2;

const TASKS_STORAGE = "upscayl-cloud.tasks"; // tasks started in this tab, for a reload

let caps = null;
let onCreditsChanged = () => {};
let credits = null; // the account's balance as last seen (null: not known)
let items = []; // {file, info, problem, preview, el, entry, startError}
let nextId = 1;
let busy = false; // uploading: options, the file picker, Remove and Sign out are locked
// Bumped on sign-out: work begun for the key before (files still being read)
// finds it changed after its next await and stops, instead of listing the
// last person's images for the next one.
let generation = 0;
// One per generation, aborted on sign-out: polls stop, and so do uploads
// (a refused key signs out mid-upload: the PUTs and parts went on sending,
// and a completion went out later with the next person's key).
let work = new AbortController();

const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

const options = () => ({
  model: $("#model").value,
  scale: document.querySelector("input[name=scale]:checked").value,
  format: $("#format").value,
  enhanceFace: $("#enhance-face").checked,
});

function describeModel() {
  const model = caps.models.find((m) => m.name === $("#model").value);
  $("#model-desc").textContent = model ? `${model.title}: ${model.description}` : "";
}

function describeQuality() {
  const format = $("#format").value;
  const quality = caps.quality[format];
  $("#quality").textContent = quality
    ? `Quality ${quality} of 100, set by this server for ${format.toUpperCase()} (the API has no quality option).`
    : `${format.toUpperCase()} is lossless: no quality setting.`;
}

/** Fill the option controls from GET /capabilities. */
export function setCapabilities(value, creditsChanged) {
  caps = value;
  onCreditsChanged = creditsChanged;
  const model = $("#model");
  model.replaceChildren(
    ...caps.models.map((m) => h("option", { value: m.name, selected: m.name === caps.defaultModel }, `${m.title} (${m.name})`)),
  );
  $("#scales").replaceChildren(
    ...caps.scales.map((s) =>
      h(
        "label.choice",
        {},
        h("input", { type: "radio", name: "scale", value: s, checked: s === caps.defaultScale }),
        `${s}×`,
      ),
    ),
  );
  $("#format").replaceChildren(
    ...caps.formats.map((f) => h("option", { value: f, selected: f === caps.defaultFormat }, f.toUpperCase())),
  );
  const face = $("#enhance-face");
  face.disabled = !caps.faceEnhancement;
  face.checked = false;
  // The server says why (no model at all, or UPSCAYL_FACE_MODEL names one it lacks).
  $("#face-help").textContent = caps.faceEnhancement
    ? "Restores faces after upscaling."
    : `Not available: ${sentence(caps.faceEnhancementMessage || "this server has no face-restoration model")}`;
  $("#drop-help").textContent = `JPEG, PNG or WebP, up to ${formatBytes(caps.limits.maxUploadBytes)} each.`;
  credits = caps.account ? caps.account.credits : null;
  describeModel();
  describeQuality();
  refresh();
  resumeTasks();
}

/** The balance shown in the header, for the cost check before uploading. */
export function setCredits(value) {
  credits = value;
  refresh();
}

/**
 * Sign-out: nothing of this key's work stays on screen for the next person
 * (task cards hold signed download links), and its polls stop.
 */
export function resetUpscale() {
  generation += 1;
  if (busy) setBusy(false); // signed out by a refused key while uploading
  work.abort();
  work = new AbortController();
  for (const item of items) URL.revokeObjectURL(item.preview);
  items = [];
  credits = null;
  $("#file-list").replaceChildren();
  $("#tasks").replaceChildren();
  sessionStorage.removeItem(TASKS_STORAGE);
  refresh();
}

function facts(item, scale) {
  const parts = [formatBytes(item.file.size)];
  if (item.info.width) {
    parts.push(`${item.info.width} × ${item.info.height} px → ${item.info.width * scale} × ${item.info.height * scale} px`);
  }
  return parts.join(" · ");
}

/** Re-check every file against the current options and redraw the list. */
function refresh() {
  if (!caps) return;
  const { scale, format } = options();
  for (const item of items) {
    item.problem = refusal(item.info, item.file, caps.limits, Number(scale), format);
    item.el.querySelector(".file-facts").textContent = facts(item, Number(scale));
    const problem = item.el.querySelector(".file-problem");
    // A failed upload stays listed (and can be retried); a refusal cannot be sent.
    problem.textContent = item.problem
      ? `Will not be sent: ${refusalSentence(item.problem, item.file.name)}`
      : item.uploadError
        ? `Upload failed: ${item.uploadError}`
        : item.startError
          ? `Not started: ${item.startError}`
          : "";
    problem.hidden = !problem.textContent;
    item.el.classList.toggle("refused", Boolean(item.problem || item.uploadError || item.startError));
  }
  const ready = items.filter((i) => !i.problem);
  const cost = ready.length * caps.creditsPerImage;
  // Known to be more than the account holds: refused here, before any upload
  // (start-task's 402 would come only after every file had gone up).
  const short = credits !== null && cost > credits;
  $("#start").disabled = busy || ready.length === 0 || short;
  $("#cost").textContent = !items.length
    ? "No images chosen yet."
    : short
      ? `${ready.length} of ${plural(items.length, "image")} ready · needs ${plural(cost, "credit")}, but ${credits} left: remove some, or ask the server's operator for more.`
      : `${ready.length} of ${plural(items.length, "image")} ready · uses ${plural(cost, "credit")}`;
  $("#cost").classList.toggle("error", short);
}

/** A preview; a file whose header is fine but whose pixels are not shows an empty tile. */
function thumbnail(src) {
  const img = h("img.thumb", { src, alt: "" });
  img.addEventListener("error", () => img.replaceWith(h("div.thumb.placeholder", { "aria-hidden": "true" })), { once: true });
  return img;
}

function removeItem(item) {
  items = items.filter((i) => i !== item);
  URL.revokeObjectURL(item.preview);
  item.el.remove();
  refresh();
  $("#file-input").focus();
}

async function addFiles(fileList) {
  const mine = generation;
  for (const file of fileList) {
    let info;
    try {
      info = await inspectFile(file);
    } catch {
      // One unreadable entry (a folder dropped as a file, a file gone since)
      // stopped the rest from being added, without a word.
      info = { type: null, width: null, height: null, broken: null, refused: null, unreadable: true };
    }
    if (mine !== generation) return; // signed out while this file was read
    const preview = URL.createObjectURL(file);
    const id = `file-${nextId++}`;
    const item = { file, info, preview, problem: null, uploadError: null, startError: null, entry: null, el: null };
    const remove = h("button.link", { type: "button", "aria-label": `Remove ${file.name}` }, "Remove");
    remove.addEventListener("click", () => removeItem(item));
    item.el = h(
      "li.file",
      { id, tabindex: "-1" },
      info.type ? thumbnail(preview) : h("div.thumb.placeholder", { "aria-hidden": "true" }),
      h(
        "div.file-meta",
        {},
        h("span.file-name", {}, file.name),
        h("span.file-facts"),
        h("p.file-problem", { hidden: true }),
        h("progress", { max: String(file.size || 1), value: "0", hidden: true, "aria-label": `Upload of ${file.name}` }),
        h("span.file-state"),
      ),
      remove,
    );
    items.push(item);
    $("#file-list").append(item.el);
  }
  refresh();
  announce(`${items.length} image${items.length === 1 ? "" : "s"} chosen`);
}

function setBusy(value) {
  busy = value;
  for (const el of document.querySelectorAll("#options select, #options input, #file-input")) {
    el.disabled = busy || (el.id === "enhance-face" && !caps.faceEnhancement);
  }
  // Removing a file on its way up did not stop it being sent and charged;
  // signing out mid-upload would leave the uploads running for no one.
  for (const el of document.querySelectorAll("#file-list button, #sign-out")) el.disabled = busy;
  $("#drop").classList.toggle("disabled", busy);
  refresh();
}

/** Upload one group, two files at a time; resolves with those uploaded, in the chosen order. */
async function uploadAll(ready) {
  const { signal } = work;
  const uploaded = [];
  let next = 0;
  async function worker() {
    while (next < ready.length) {
      const item = ready[next++];
      if (!items.includes(item)) continue; // removed while earlier files went up
      if (item.entry) {
        // Uploaded by an earlier press whose task was refused (no credits,
        // say): the file is on the server still, so it is not sent again.
        uploaded.push({ item, entry: item.entry });
        continue;
      }
      const bar = item.el.querySelector("progress");
      const state = item.el.querySelector(".file-state");
      bar.hidden = false;
      item.uploadError = null;
      state.textContent = "Uploading…";
      try {
        const entry = await uploadFile(
          item.file,
          item.info.type,
          caps,
          (sent) => {
            bar.value = sent;
            state.textContent = `Uploading… ${Math.floor((sent / (item.file.size || 1)) * 100)} %`;
          },
          signal,
        );
        state.textContent = "Uploaded";
        item.entry = entry;
        uploaded.push({ item, entry });
      } catch (err) {
        state.textContent = "";
        bar.hidden = true;
        item.uploadError = explain(err);
      }
    }
  }
  await Promise.all(Array.from({ length: UPLOAD_CONCURRENCY }, worker));
  // Keep the order the person chose.
  return ready.map((item) => uploaded.find((u) => u.item === item)).filter(Boolean);
}

function taskCard(title) {
  const bar = h("progress", { max: "100", value: "0", "aria-label": `Progress of ${title}` });
  // Only the state is live, read out when it changes; the percentage and the
  // countdown beside it change every second or poll, and were read out each time.
  const news = h("span", { "aria-live": "polite" }, "Waiting in the queue…");
  const detail = h("span.task-detail");
  const state = h("p.task-state", {}, news, " ", detail);
  const error = h("p.error", { role: "alert" });
  const results = h("div.task-results");
  const heading = h("h3", { tabindex: "-1" }, title);
  const card = h("article.task", {}, heading, bar, state, error, results);
  $("#tasks").prepend(card);
  // The Upscale button was disabled under the keyboard's focus: it goes to the new card.
  heading.focus({ preventScroll: true });
  // On a phone the card starts below the options: bring it into sight.
  card.scrollIntoView({ block: "nearest", behavior: "smooth" });
  return { card, bar, news, detail, error, results };
}

/** A card's state (read out if it changed) and detail (shown only). */
function setState(view, news, detail = "") {
  if (view.news.textContent !== news) view.news.textContent = news;
  view.detail.textContent = detail;
}

const STATES = { pending: "Waiting in the queue…", processing: "Upscaling…", completed: "Done", failed: "Failed" };

/** Why a watch waits (see poll.js, waitable). */
function waitReason(err) {
  if (err.status === 0) return "The server cannot be reached";
  if (err.code === "RATE_LIMIT_EXCEEDED") return "Hourly request limit reached";
  if (err.status === 429) return "Too many requests";
  if (err.status === 500) return "The server met an error";
  return "The server is busy or restarting";
}

/** Start one task for an uploaded group; resolves once start-task has answered. */
async function startTask(group, opts) {
  const mine = generation;
  const count = group.length;
  const title = `${count} image${count === 1 ? "" : "s"} · ${opts.model} · ${opts.scale}× · ${opts.format.toUpperCase()}`;
  const view = taskCard(title);
  const originals = new Map(group.map(({ item, entry }) => [entry.fileName, item.preview]));
  const form = new FormData();
  form.append("files", JSON.stringify(group.map((g) => g.entry)));
  form.append("model", opts.model);
  form.append("scale", opts.scale);
  form.append("saveImageAs", opts.format);
  form.append("enhanceFace", String(opts.enhanceFace));
  let taskId;
  try {
    taskId = (await api.startTask(form)).taskId;
  } catch (err) {
    if (startUncertain(err)) {
      // Its files leave the list (keepRefused): "try again" would mean
      // choosing them again, and paying twice if it did start.
      setState(view, "May have started");
      view.error.textContent = `${explain(err)} The answer was lost: look in History before sending these images again.`;
    } else {
      setState(view, "Not started");
      view.error.textContent = explain(err);
    }
    return { failed: err };
  }
  // Signed out while it started: not remembered (nor announced) for the next person.
  if (mine !== generation) return null; // start() stops on it too
  view.card.dataset.taskId = taskId;
  remember({ taskId, title });
  announce(`Task started: ${title}`);
  onCreditsChanged();
  return { view, taskId, count, originals };
}

function remembered() {
  try {
    return JSON.parse(sessionStorage.getItem(TASKS_STORAGE) || "[]");
  } catch {
    return [];
  }
}

function remember(task) {
  sessionStorage.setItem(TASKS_STORAGE, JSON.stringify([...remembered(), task]));
}

/** Another key signs in: the tasks remembered for the last one are not its to watch. */
export function forgetTasks() {
  sessionStorage.removeItem(TASKS_STORAGE);
}

function forget(taskId) {
  sessionStorage.setItem(TASKS_STORAGE, JSON.stringify(remembered().filter((t) => t.taskId !== taskId)));
}

/**
 * After a reload, the tasks this tab started and had not seen finish get
 * their cards back and are watched again (their originals are gone with
 * the old page: no comparison, the results are still there).
 */
function resumeTasks() {
  const shown = new Set([...document.querySelectorAll("#tasks .task")].map((c) => c.dataset.taskId));
  for (const { taskId, title } of remembered()) {
    if (shown.has(taskId)) continue;
    const view = taskCard(title);
    view.card.dataset.taskId = taskId;
    followTask({ view, taskId, count: null, originals: new Map() });
  }
}

/** Watch a started task until it is done or failed, then show its results. */
async function followTask({ view, taskId, count, originals }) {
  const { signal } = work;
  try {
    const final = await watchTask(
      taskId,
      (data) => {
        view.bar.value = Number(data.progress || 0);
        setState(view, STATES[data.status] || data.status, data.status === "processing" ? `${data.progress || 0} %` : "");
      },
      (seconds, err) => setState(view, `${waitReason(err)};`, `trying again in ${seconds} s…`),
      signal,
    );
    if (final === null) return; // signed out
    forget(taskId);
    if (final.error) view.error.textContent = final.error;
    const files = final.files || [];
    if (final.status === "completed") {
      view.bar.value = 100;
      view.results.append(resultList(files, originals, `upscayl-${taskId.slice(0, 8)}.zip`, taskId));
      announce(`Done: ${files.length} ${count === null ? "" : `of ${count} `}images upscaled`);
    } else {
      announce(`Task failed: ${final.error || "no image could be upscaled"}`);
    }
  } catch (err) {
    if (signal.aborted) return;
    // Not the last wait's reason ("The server met an error;"), left without its countdown.
    setState(view, "Status unknown");
    view.error.textContent = explain(err);
    // Gone (or not this key's): watched again, it failed again after every reload.
    if (err.status === 404 || err.status === 401) forget(taskId);
  }
  onCreditsChanged();
}

/**
 * Upload group by group (maxFilesPerTask files, in the order chosen) and
 * start each group's task as soon as its files are up, before the next group
 * goes: the server works while the page uploads, and the uploads that no task
 * names yet never exceed one group (get-upload-url refuses past the server's
 * cap, UPSCAYL_MAX_PENDING_UPLOAD_BYTES, two full groups by default).
 */
async function start(event) {
  event.preventDefault();
  const ready = items.filter((i) => !i.problem);
  if (!ready.length) return;
  const opts = options();
  const size = caps.limits.maxFilesPerTask;
  const mine = generation;
  setBusy(true);
  ready[0].el.focus(); // the Upscale button is disabled under the keyboard's focus
  const runs = [];
  for (let first = 0; first < ready.length; first += size) {
    const group = ready.slice(first, first + size);
    const uploaded = await uploadAll(group);
    if (mine !== generation) return; // signed out meanwhile (the key was refused)
    refresh(); // this group's failed uploads, with their reason
    // The reasons are in the list; a screen reader hears only that there are some.
    const failed = group.filter((item) => item.uploadError).length;
    if (failed) announce(`${plural(failed, "image")} could not be uploaded: the list says why.`);
    if (!uploaded.length) continue;
    for (const { item } of uploaded) item.startError = null;
    const started = await startTask(uploaded, opts);
    if (mine !== generation) return;
    if (started.failed) {
      keepRefused(uploaded, started.failed);
      // Out of credits or requests: each next group was uploaded only to be
      // refused, most likely, the same way (a smaller last group might fit
      // the credits left). It stays listed, not sent, for the next press.
      if ([402, 429].includes(started.failed.status)) {
        notSent(ready.slice(first + size), started.failed);
        if (started.failed.status === 402) {
          // The balance shown was out of date: Upscale stays locked until the
          // real one is known (with the old one it came back enabled, and a
          // quick press met another 402).
          await onCreditsChanged();
          if (mine !== generation) return;
        }
        break;
      }
      continue;
    }
    // The group's files now belong to its task card (their previews too).
    for (const { item } of uploaded) item.el.remove();
    items = items.filter((i) => !uploaded.some((u) => u.item === i));
    runs.push(followTask(started));
  }
  setBusy(false);
  refresh();
  await Promise.all(runs);
}

/**
 * A group whose task the server refused stays listed, with the reason: the
 * files were lost from the page before, to be chosen again. A refusal that
 * leaves the uploads usable (no credits, a rate limit) keeps them for the
 * next press; anything else sends them again. A start whose answer was lost
 * (no connection, a 5xx) may have started the task after all: those files
 * are not offered again (the history shows whether it started).
 */
/** A start-task whose answer was lost (no connection, a 5xx): it may have started. */
function startUncertain(err) {
  return !(err instanceof ApiError) || err.status === 0 || err.status >= 500;
}

/** Files left unsent after `err` refused an earlier group's task. */
function notSent(rest, err) {
  const left = rest.filter((item) => items.includes(item));
  for (const item of left) item.startError = explain(err);
  if (left.length) announce(`${plural(left.length, "more image")} not sent.`);
}

function keepRefused(group, err) {
  const uncertain = startUncertain(err);
  const reuse = err instanceof ApiError && ["INSUFFICIENT_CREDITS", "RATE_LIMIT_EXCEEDED"].includes(err.code);
  for (const { item } of group) {
    item.el.querySelector("progress").hidden = true;
    item.el.querySelector(".file-state").textContent = "";
    if (uncertain) {
      item.el.remove();
      continue;
    }
    item.startError = explain(err);
    if (!reuse) item.entry = null;
  }
  if (uncertain) items = items.filter((i) => !group.some((g) => g.item === i));
}

export function initUpscale() {
  const drop = $("#drop");
  const input = $("#file-input");
  input.addEventListener("change", () => {
    addFiles([...input.files]);
    input.value = "";
  });
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    if (!input.disabled) addFiles([...event.dataTransfer.files]);
  });
  // An image dropped beside the drop zone: the browser would open it in
  // place of the page, and the chosen files and finished cards would go.
  for (const type of ["dragover", "drop"]) {
    window.addEventListener(type, (event) => {
      // Only files: text dragged into a field (the key) is the browser's.
      const files = event.dataTransfer && [...event.dataTransfer.types].includes("Files");
      if (files && !drop.contains(event.target)) event.preventDefault();
    });
  }
  $("#model").addEventListener("change", describeModel);
  $("#format").addEventListener("change", () => {
    describeQuality();
    refresh();
  });
  $("#scales").addEventListener("change", refresh);
  $("#options").addEventListener("submit", start);
  // Leaving mid-upload loses the files not yet sent: the browser asks first.
  window.addEventListener("beforeunload", (event) => {
    if (busy) event.preventDefault();
  });
}
