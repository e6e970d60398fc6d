// The upscale view: pick files, choose options, upload, start, watch, compare.

import { api } from "./api.js";
import { $, announce, h } from "./dom.js";
import { inspectFile, refusal, refusalSentence } from "./inspect.js";
import { explain, formatBytes } from "./messages.js";
import { watchTask } from "./poll.js";
import { resultList } from "./results.js";
import { uploadFile } from "./upload.js";

const UPLOAD_CONCURRENCY = 2;

let caps = null;
let onCreditsChanged = () => {};
let items = []; // {file, info, problem, preview, el}
let nextId = 1;
let busy = false; // uploading: options and the file picker are locked

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
  $("#face-help").textContent = caps.faceEnhancement
    ? "Restores faces after upscaling."
    : "Not available on this server: no face-restoration model is installed. An operator can add one with “upscayl-cloud models add”.";
  $("#drop-help").textContent = `JPEG, PNG or WebP, up to ${formatBytes(caps.limits.maxUploadBytes)} each.`;
  describeModel();
  describeQuality();
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
        : "";
    problem.hidden = !problem.textContent;
    item.el.classList.toggle("refused", Boolean(item.problem || item.uploadError));
  }
  const ready = items.filter((i) => !i.problem);
  const cost = ready.length * caps.creditsPerImage;
  $("#start").disabled = busy || ready.length === 0;
  $("#cost").textContent = items.length
    ? `${ready.length} of ${items.length} image${items.length === 1 ? "" : "s"} ready · uses ${cost} credit${cost === 1 ? "" : "s"}`
    : "No images chosen yet.";
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
  for (const file of fileList) {
    const info = await inspectFile(file);
    const preview = URL.createObjectURL(file);
    const id = `file-${nextId++}`;
    const item = { file, info, preview, problem: null, uploadError: null, el: null };
    const remove = h("button.link", { type: "button", "aria-label": `Remove ${file.name}` }, "Remove");
    remove.addEventListener("click", () => removeItem(item));
    item.el = h(
      "li.file",
      { id },
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
  $("#start").disabled = busy || !items.some((i) => !i.problem);
  $("#drop").classList.toggle("disabled", busy);
}

/** Upload one group, two files at a time; resolves with those uploaded, in the chosen order. */
async function uploadAll(ready) {
  const uploaded = [];
  let next = 0;
  async function worker() {
    while (next < ready.length) {
      const item = ready[next++];
      if (!items.includes(item)) continue; // removed while earlier files went up
      const bar = item.el.querySelector("progress");
      const state = item.el.querySelector(".file-state");
      bar.hidden = false;
      item.uploadError = null;
      state.textContent = "Uploading…";
      try {
        const entry = await uploadFile(item.file, item.info.type, caps, (sent) => {
          bar.value = sent;
          state.textContent = `Uploading… ${Math.floor((sent / (item.file.size || 1)) * 100)} %`;
        });
        state.textContent = "Uploaded";
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
  const state = h("p.task-state", { "aria-live": "polite" }, "Waiting in the queue…");
  const error = h("p.error", { role: "alert" });
  const results = h("div.task-results");
  const card = h("article.task", {}, h("h3", {}, title), bar, state, error, results);
  $("#tasks").prepend(card);
  // On a phone the card starts below the options: bring it into sight.
  card.scrollIntoView({ block: "nearest", behavior: "smooth" });
  return { card, bar, state, error, results };
}

/** Start one task for an uploaded group; resolves once start-task has answered. */
async function startTask(group, opts) {
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
    view.state.textContent = "Not started";
    view.error.textContent = explain(err);
    return null;
  }
  view.card.dataset.taskId = taskId;
  announce(`Task started: ${title}`);
  onCreditsChanged();
  return { view, taskId, count, originals };
}

/** Watch a started task until it is done or failed, then show its results. */
async function followTask({ view, taskId, count, originals }) {
  try {
    const final = await watchTask(
      taskId,
      (data) => {
        view.bar.value = Number(data.progress || 0);
        view.state.textContent =
          data.status === "pending" ? "Waiting in the queue…"
          : data.status === "processing" ? `Upscaling… ${data.progress || 0} %`
          : data.status === "completed" ? "Done"
          : "Failed";
      },
      (seconds) => {
        view.state.textContent = `Waiting ${Math.ceil(seconds)} s (hourly request limit)…`;
      },
    );
    if (final.error) view.error.textContent = final.error;
    if (final.status === "completed") {
      view.bar.value = 100;
      view.results.append(resultList(final.files || [], originals, `upscayl-${taskId.slice(0, 8)}.zip`));
      announce(`Done: ${(final.files || []).length} of ${count} images upscaled`);
    } else {
      announce(`Task failed: ${final.error || "no image could be upscaled"}`);
    }
  } catch (err) {
    view.error.textContent = explain(err);
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
  setBusy(true);
  const runs = [];
  for (let first = 0; first < ready.length; first += size) {
    const uploaded = await uploadAll(ready.slice(first, first + size));
    // The group's files now belong to its task card (their previews too).
    for (const { item } of uploaded) item.el.remove();
    items = items.filter((i) => !uploaded.some((u) => u.item === i));
    refresh(); // the count left, and this group's failed uploads with their reason
    if (!uploaded.length) continue;
    const started = await startTask(uploaded, opts);
    if (started) runs.push(followTask(started));
  }
  setBusy(false);
  refresh();
  await Promise.all(runs);
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
  $("#model").addEventListener("change", describeModel);
  $("#format").addEventListener("change", () => {
    describeQuality();
    refresh();
  });
  $("#scales").addEventListener("change", refresh);
  $("#options").addEventListener("submit", start);
}
