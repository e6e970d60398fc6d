// The history page: the account's tasks, newest first, with the spec's
// filters (batch, failed, processed) and timestamp paging (docs/api.md,
// "get-upscayl-history"). "Newer" walks back through the offsets seen.

import { api } from "./api.js";
import { $, h } from "./dom.js";
import { explain, formatDate } from "./messages.js";
import { resultList } from "./results.js";

const PAGE_SIZE = 10;
let offsets = [undefined]; // offsets[i]: timestampOffset of page i
let page = 0;
let nextOffset = null;
// Each load's number: an answer to an earlier one (a second "Older" pressed
// before the first came back, a sign-out) is dropped, not shown.
let generation = 0;

function filters() {
  const query = { limit: PAGE_SIZE };
  const status = $("#f-status").value;
  const batch = $("#f-batch").value;
  const failed = $("#f-failed").value;
  if (status) query.processed = status;
  if (batch) query.batch = batch === "true";
  if (failed) query.failed = failed === "true";
  return query;
}

const STATUS_WORDS = { pending: "Queued", processing: "Processing", completed: "Completed", failed: "Failed" };

function taskItem(task) {
  const files = task.files || [];
  const title = `${formatDate(task.createdAt)} · ${task.model} · ${task.scale}× · ${(task.saveImageAs || "").toUpperCase()}`;
  return h(
    "li.task",
    { "data-task-id": task.taskId },
    h(
      "div.task-head",
      {},
      h("h3", {}, title),
      h(`span.badge.${task.status}`, {}, STATUS_WORDS[task.status] || task.status),
    ),
    h(
      "p.help",
      {},
      // Results are listed as they are delivered: none yet is no news while it runs.
      !task.batchMode ? "Single image"
      : task.status === "pending" || task.status === "processing" ? "Batch"
      : `Batch · ${files.length} result${files.length === 1 ? "" : "s"}`,
      task.status === "processing" ? ` · ${task.progress || 0} %` : "",
      task.enhanceFace ? " · faces enhanced" : "",
    ),
    task.error ? h("p.error", {}, task.error) : null,
    files.length
      ? resultList(files, new Map(), `upscayl-${(task.taskId || "batch").slice(0, 8)}.zip`, task.taskId)
      : null,
  );
}

export async function loadHistory() {
  const mine = ++generation;
  const list = $("#history-list");
  const summary = $("#history-summary");
  // Taken before the pager is disabled below, which takes the focus away.
  const pressed = document.activeElement;
  summary.textContent = "Loading…";
  // Paging from an answer not in yet would reuse the last page's offset.
  $("#history-newer").disabled = true;
  $("#history-older").disabled = true;
  const query = filters();
  if (offsets[page] !== undefined) query.timestampOffset = offsets[page];
  try {
    const body = await api.history(query);
    if (mine !== generation) return;
    const tasks = body.data || [];
    const { total = tasks.length, hasMore = false } = body.pagination || {};
    nextOffset = hasMore ? body.pagination.nextOffset : null;
    list.replaceChildren(...tasks.map(taskItem));
    const first = page * PAGE_SIZE + 1;
    const last = first + tasks.length - 1;
    const shown = first === last ? `${first}` : `${first}–${last}`;
    summary.textContent = tasks.length
      ? `Showing ${shown} of ${total} task${total === 1 ? "" : "s"}`
      : "No tasks match these filters.";
  } catch (err) {
    if (mine !== generation) return;
    list.replaceChildren();
    summary.textContent = explain(err);
    nextOffset = null;
  }
  $("#history-newer").disabled = page === 0;
  $("#history-older").disabled = nextOffset === null;
  // Paging onto the first or last page disables the button under the focus:
  // the focus goes to the summary of what is now shown; else it goes back
  // to the button, which was disabled while the page loaded.
  if (pressed && pressed.disabled) summary.focus();
  else if (pressed && pressed !== document.body && document.activeElement === document.body) pressed.focus();
}

/** Signed out: the last key's tasks and their signed links leave the page. */
export function clearHistory() {
  generation += 1;
  offsets = [undefined];
  page = 0;
  nextOffset = null;
  $("#history-list").replaceChildren();
  $("#history-summary").textContent = "";
}

function restart() {
  offsets = [undefined];
  page = 0;
  return loadHistory();
}

export function initHistory() {
  $("#history-filters").addEventListener("submit", (event) => {
    event.preventDefault();
    restart();
  });
  // A filter changed and not applied made "Older" page the new filter from
  // the old filter's offset: a filter applies as soon as it changes.
  $("#history-filters").addEventListener("change", restart);
  $("#history-refresh").addEventListener("click", loadHistory);
  $("#history-older").addEventListener("click", () => {
    if (nextOffset === null) return;
    page += 1;
    offsets[page] = nextOffset;
    loadHistory();
  });
  $("#history-newer").addEventListener("click", () => {
    if (page === 0) return;
    page -= 1;
    loadHistory();
  });
  return restart;
}
