// The upscale view: pick files, choose options, upload them group by group
// and start each group's task (tasks.js shows and watches it).

import { $, announce, h, placeFocus } from "./dom.js";
import { inspectFile, refusal, refusalSentence } from "./inspect.js";
import { explain, formatBytes, sentence } from "./messages.js";
import { clearPending, dropPending, keepPending, markSent } from "./pending.js";
import {
  followTask,
  forgetTasks,
  onCreditsChange,
  refusedUploads,
  resetTasks,
  resumeTasks,
  startTask,
  startUncertain,
} from "./tasks.js";
import { initUnstarted, offerStarting, offerUnstarted, withdrawOffer } from "./unstarted.js";
import { tooLongToWait, uploadFile } from "./upload.js";

const UPLOAD_CONCURRENCY = 2;

let caps = null;
let onCreditsChanged = () => {};
let credits = null; // the account's balance as last seen (null: not known)
// {file, info, preview, el, problem, uploadError, startError, notSent,
//  entry (its upload, until its task starts), resume (a multipart upload
//  whose completion failed: only that is sent again), order}
let items = [];
let nextId = 1;
// Each file's place in the order chosen, increasing across reloads too (pending.js sorts by it).
let nextOrder = Date.now() * 1000;
let busy = false; // uploading: options, the file picker, Remove and Sign out are locked; Cancel shows
// Bumped on sign-out: work begun for the key before (files still being read)
// finds it changed after its next await and stops, instead of listing the
// last person's images for the next one.
let generation = 0;
// One per generation, aborted on sign-out: uploads stop (a refused key signs
// out mid-upload: the PUTs and parts went on sending, and a completion went
// out later with the next person's key).
let work = new AbortController();
// The run going on (one press of Upscale): aborted by Cancel, and by a sign-out.
let run = null;

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
  onCreditsChange(creditsChanged);
  describeModel();
  describeQuality();
  refresh();
  resumeTasks();
  offerUnstarted(caps);
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
  run = null;
  for (const item of items) URL.revokeObjectURL(item.preview);
  items = [];
  credits = null;
  $("#file-list").replaceChildren();
  resetTasks();
  clearPending();
  withdrawOffer();
  refresh();
}

/** Another key signs in: what this tab remembers for the last one (tasks to watch, uploads to start) is not its. */
export function forgetRemembered() {
  forgetTasks();
  clearPending();
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
          : item.notSent
            ? `Not sent: ${item.notSent}`
            : "";
    problem.hidden = !problem.textContent;
    item.el.classList.toggle("refused", Boolean(problem.textContent));
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
  // Its upload, if any, is no longer offered after a reload (the server
  // deletes it when it expires).
  if (item.entry) dropPending([item.entry.fileName]);
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
    const item = { file, info, preview, el: null, problem: null, uploadError: null, startError: null, notSent: null };
    Object.assign(item, { entry: null, resume: null, order: nextOrder++ });
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
  // Cancel is the way out of a run (a stalled connection locked the page).
  for (const el of document.querySelectorAll("#file-list button, #sign-out")) el.disabled = busy;
  $("#drop").classList.toggle("disabled", busy);
  const cancel = $("#cancel");
  const focused = document.activeElement === cancel;
  cancel.hidden = !busy;
  refresh();
  // Cancel hidden under the focus hands it on, as the disabled Upscale did.
  if (focused && !busy) placeFocus($("#start").disabled ? $("#upscale-title") : $("#start"));
}

/**
 * Upload one group, two files at a time. Resolves with the files uploaded
 * (in the order chosen), and `halt`: a refusal that says to wait longer
 * than a run should (the hourly limit on upload links, say), after which no
 * more file is sent; the rest would meet it too.
 */
async function uploadAll(group, opts, signal) {
  const uploaded = [];
  let halt = null;
  let next = 0;
  async function worker() {
    while (next < group.length && !halt && !signal.aborted) {
      const item = group[next++];
      if (!items.includes(item)) continue; // removed while earlier files went up
      if (item.entry) {
        // Uploaded by an earlier press whose task was refused (no credits,
        // say) or cancelled: the file is on the server still, so it is not
        // sent again.
        keepPending(item.entry, item.file.name, opts, item.order);
        uploaded.push(item);
        continue;
      }
      const bar = item.el.querySelector("progress");
      const state = item.el.querySelector(".file-state");
      bar.hidden = false;
      state.textContent = "Uploading…";
      try {
        const entry = await uploadFile(item.file, item.info.type, caps, {
          onProgress: (sent) => {
            bar.value = sent;
            state.textContent = `Uploading… ${Math.floor((sent / (item.file.size || 1)) * 100)} %`;
          },
          // A busy store's Retry-After (or the next step), counted from here.
          onWait: (seconds) => {
            state.textContent = `Uploading… trying again in ${seconds} s`;
          },
          signal,
          resume: item.resume,
        });
        item.resume = null;
        item.entry = entry;
        // Until its task starts: a reload offers it (unstarted.js).
        keepPending(entry, item.file.name, opts, item.order);
        state.textContent = "Uploaded";
        uploaded.push(item);
      } catch (err) {
        item.resume = err.resume || null; // its parts are up: the next press completes it
        state.textContent = "";
        bar.hidden = true;
        if (err.code === "ABORTED") continue; // cancelled: marked with the files not sent
        item.uploadError = explain(err);
        if (tooLongToWait(err)) halt = err;
      }
    }
  }
  await Promise.all(Array.from({ length: UPLOAD_CONCURRENCY }, worker));
  return { uploaded: group.filter((item) => uploaded.includes(item)), halt };
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
  if (!ready.length || busy) return;
  const opts = options();
  const size = caps.limits.maxFilesPerTask;
  const mine = generation;
  const current = new AbortController();
  const signedOut = () => current.abort();
  work.signal.addEventListener("abort", signedOut, { once: true });
  run = current;
  const { signal } = current;
  for (const item of ready) Object.assign(item, { uploadError: null, startError: null, notSent: null });
  setBusy(true);
  placeFocus(ready[0].el); // the Upscale button is disabled under the keyboard's focus
  const runs = [];
  for (let first = 0; first < ready.length; first += size) {
    const group = ready.slice(first, first + size);
    const later = ready.slice(first + size);
    const { uploaded, halt } = await uploadAll(group, opts, signal);
    if (mine !== generation) return; // signed out meanwhile (the key was refused)
    refresh(); // this group's failed uploads, with their reason
    // The reasons are in the list; a screen reader hears only that there are some.
    const failed = group.filter((item) => item.uploadError).length;
    if (failed) announce(`${plural(failed, "image")} could not be uploaded: the list says why.`);
    if (signal.aborted) {
      cancelled([...group, ...later]);
      break;
    }
    if (halt) notSent([...group.filter((item) => !item.entry), ...later], halt);
    if (uploaded.length) {
      const originals = new Map(uploaded.map((item) => [item.entry.fileName, item.preview]));
      // A reload from here until the answer may leave the task started and
      // charged: those uploads are then not offered to Start again.
      markSent(uploaded.map((item) => item.entry.fileName));
      const started = await startTask(uploaded.map((item) => item.entry), opts, originals);
      if (mine !== generation || started === null) return;
      if (started.failed) {
        const err = started.failed;
        // A refusal of no file in particular (credits, a rate limit, the
        // options) would refuse each next group alike: they are not sent.
        // Those naming a file, or a lost answer, let the next group go.
        if (!keepRefused(uploaded, err) && !startUncertain(err)) {
          if (!halt) notSent(later, err);
          if (err.status === 402) {
            // The balance shown was out of date: Upscale stays locked until the
            // real one is known (with the old one it came back enabled, and a
            // quick press met another 402).
            await onCreditsChanged();
            if (mine !== generation) return;
          }
          break;
        }
      } else {
        // The group's files now belong to its task card (their previews too).
        for (const item of uploaded) item.el.remove();
        dropPending(uploaded.map((item) => item.entry.fileName));
        items = items.filter((i) => !uploaded.includes(i));
        runs.push(followTask(started));
      }
    }
    if (halt) break;
    if (signal.aborted) {
      // Cancelled while start-task was answered: that task stands.
      cancelled(later);
      break;
    }
  }
  work.signal.removeEventListener("abort", signedOut);
  if (run === current) run = null;
  setBusy(false);
  refresh();
  await Promise.all(runs);
}

/** Cancel: the files not sent say so; those already up keep their upload for the next press. */
function cancelled(rest) {
  let count = 0;
  for (const item of rest) {
    if (!items.includes(item) || item.uploadError) continue;
    if (item.entry) {
      item.startError = "Cancelled. Its upload is kept: Upscale starts it without sending it again.";
    } else {
      item.notSent = "Cancelled.";
      count += 1;
    }
  }
  refresh();
  announce(`Cancelled: ${plural(count, "image")} not sent.`);
}

/** Files left unsent after `err` (a start-task refusal, an hourly limit) made sending them pointless for now. */
function notSent(rest, err) {
  const left = rest.filter((item) => items.includes(item) && !item.uploadError);
  for (const item of left) {
    // Those uploaded by an earlier press wait, not started; the others were not sent.
    if (item.entry) item.startError = explain(err);
    else item.notSent = explain(err);
  }
  if (left.length) announce(`${plural(left.length, "more image")} not sent.`);
}

/**
 * A group whose task the server refused stays listed, with the reason: the
 * files were lost from the page before, to be chosen again. Their uploads
 * are kept for the next press, except one the refusal names (unknown to the
 * server or expired: sent again). A start whose answer was lost (no
 * connection, no answer in time, a 5xx) may have started the task after
 * all: those files are not offered again (the history shows whether it
 * started). Returns whether the refusal named a file of the group.
 */
function keepRefused(group, err) {
  const uncertain = startUncertain(err);
  const refused = refusedUploads(err, group.map((item) => item.entry));
  const refusedNames = group.filter((item) => refused.includes(item.entry)).map((item) => item.file.name);
  for (const item of group) {
    item.el.querySelector("progress").hidden = true;
    item.el.querySelector(".file-state").textContent = "";
    if (uncertain) {
      dropPending([item.entry.fileName]); // not offered after a reload either
      item.el.remove();
      continue;
    }
    if (!refused.length) {
      item.startError = explain(err);
    } else if (refused.includes(item.entry)) {
      item.startError = explain(err);
      dropPending([item.entry.fileName]);
      item.entry = null; // unusable: sent again by the next press
    } else {
      item.startError = `Its task was refused for ${refusedNames.join(", ")}; its upload is kept for the next press.`;
    }
    if (item.entry) markSent([item.entry.fileName], false); // refused for sure: offered after a reload
  }
  if (uncertain) items = items.filter((i) => !group.includes(i));
  return refused.length > 0;
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
  $("#cancel").addEventListener("click", () => {
    if (!run || run.signal.aborted) return;
    run.abort(); // a start-task already sent is answered first (its task, if any, stands)
    announce("Cancelling…");
  });
  initUnstarted();
  // Leaving mid-upload loses the files not yet sent, and leaving while a
  // start-task is on its way loses its answer: the browser asks first.
  window.addEventListener("beforeunload", (event) => {
    if (busy || offerStarting()) event.preventDefault();
  });
}
