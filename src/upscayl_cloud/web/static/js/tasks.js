// Tasks: start-task, a card per task watched until it is done or failed,
// and the tasks this tab started remembered (sessionStorage) so that a
// reloaded page watches them again.

import { api, ApiError } from "./api.js";
import { $, announce, focusIsFree, h, placeFocus } from "./dom.js";
import { explain } from "./messages.js";
import { watchTask } from "./poll.js";
import { resultList } from "./results.js";

const TASKS_STORAGE = "upscayl-cloud.tasks"; // tasks started in this tab, for a reload

let creditsChanged = () => {};
// Bumped on sign-out: a start-task answered after it is not shown,
// remembered or announced for the next person.
let generation = 0;
// Aborted on sign-out: the polls stop (a Cancel does not stop them: what
// was started goes on and is shown).
let polls = new AbortController();

/** fn() runs when the balance may have changed: a task started, ended or was refused. */
export function onCreditsChange(fn) {
  creditsChanged = fn;
}

/** Sign-out: no card stays (they hold signed download links), no poll goes on, nothing is remembered. */
export function resetTasks() {
  generation += 1;
  polls.abort();
  polls = new AbortController();
  $("#tasks").replaceChildren();
  forgetTasks();
}

export function taskTitle(count, opts) {
  return `${count} image${count === 1 ? "" : "s"} · ${opts.model} · ${opts.scale}× · ${opts.format.toUpperCase()}`;
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
  // The Upscale button was disabled under the keyboard's focus: it goes to
  // the new card, and on a phone the card is brought into sight. Only then:
  // a card of the next group took the focus (and scrolled the page) from
  // whatever a person was using meanwhile, a comparison's slider say; it is
  // announced instead ("Task started").
  if (focusIsFree()) {
    placeFocus(heading, { preventScroll: true });
    card.scrollIntoView({ block: "nearest", behavior: "smooth" });
  }
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
  if (err.code === "TIMEOUT") return "The server did not answer";
  if (err.status === 0) return "The server cannot be reached";
  if (err.code === "RATE_LIMIT_EXCEEDED") return "Hourly request limit reached";
  if (err.status === 429) return "Too many requests";
  if (err.status === 500) return "The server met an error";
  return "The server is busy or restarting";
}

/** A start-task whose answer was lost (no connection, no answer in time, a 5xx): it may have started. */
export function startUncertain(err) {
  return !(err instanceof ApiError) || err.status === 0 || err.status >= 500;
}

/**
 * The uploads a start-task refusal is about: a 400 names the file it
 * refused by its fileName (unknown to the server, expired, not what was
 * declared), so that upload is not usable again. Any other refusal (credits,
 * a rate limit, the options, a 408) leaves every upload as it was.
 */
export function refusedUploads(err, uploads) {
  if (!(err instanceof ApiError) || err.status !== 400) return [];
  return uploads.filter((u) => err.message.includes(u.fileName));
}

/** start-task: {taskId}, {failed: error}, or null when signed out meanwhile. */
async function ask(uploads, opts) {
  const mine = generation;
  const form = new FormData();
  const files = uploads.map(({ fileName, fileType, fileSize }) => ({ fileName, fileType, fileSize }));
  form.append("files", JSON.stringify(files));
  form.append("model", opts.model);
  form.append("scale", opts.scale);
  form.append("saveImageAs", opts.format);
  form.append("enhanceFace", String(opts.enhanceFace));
  let answer;
  try {
    answer = { taskId: (await api.startTask(form)).taskId };
  } catch (err) {
    answer = { failed: err };
  }
  return mine === generation ? answer : null;
}

function started(view, taskId, title, count, originals) {
  view.card.dataset.taskId = taskId;
  remember({ taskId, title });
  announce(`Task started: ${title}`);
  creditsChanged();
  return { view, taskId, count, originals };
}

/**
 * Start one task for `uploads` (upload.js's, in order) behind a card shown
 * at once. Resolves with the started task (for followTask), {failed: error}
 * when refused (the card says why), or null when signed out meanwhile.
 * `originals` maps fileName to the original's object URL, for the comparison.
 */
export async function startTask(uploads, opts, originals) {
  const title = taskTitle(uploads.length, opts);
  const view = taskCard(title);
  const answer = await ask(uploads, opts);
  if (!answer) return null;
  if (answer.failed) {
    const err = answer.failed;
    if (startUncertain(err)) {
      // Its files leave the list (upscale.js): "try again" would mean
      // choosing them again, and paying twice if it did start.
      setState(view, "May have started");
      view.error.textContent = `${explain(err)} The answer was lost: look in History before sending these images again.`;
    } else {
      setState(view, "Not started");
      view.error.textContent = explain(err);
    }
    return answer;
  }
  return started(view, answer.taskId, title, uploads.length, originals);
}

/**
 * Start one task for `uploads` whose card appears only once it has started
 * (unstarted.js says why it was refused), and watch it. Resolves like
 * startTask, the started task already followed.
 */
export async function startWithoutCard(uploads, opts) {
  const answer = await ask(uploads, opts);
  if (!answer || answer.failed) return answer;
  const title = taskTitle(uploads.length, opts);
  const task = started(taskCard(title), answer.taskId, title, uploads.length, new Map());
  followTask(task);
  return task;
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
export function resumeTasks() {
  const shown = new Set([...document.querySelectorAll("#tasks .task")].map((c) => c.dataset.taskId));
  for (const { taskId, title } of remembered()) {
    if (shown.has(taskId)) continue;
    const view = taskCard(title);
    view.card.dataset.taskId = taskId;
    followTask({ view, taskId, count: null, originals: new Map() });
  }
}

/** Watch a started task until it is done or failed, then show its results. */
export async function followTask({ view, taskId, count, originals }) {
  const { signal } = polls;
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
  creditsChanged();
}
