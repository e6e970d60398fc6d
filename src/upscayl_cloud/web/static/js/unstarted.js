// After a reload (or a crash) between an upload and its task's start: the
// uploads the last page left (pending.js), offered to Start or Discard. Left
// alone they held the account's cap on waiting uploads for a day, and the
// page could neither start nor forget them. Those a start-task was on its way
// for are not offered: that task may have started (and been charged).

import { $, announce, placeFocus } from "./dom.js";
import { explain, sentence } from "./messages.js";
import { dropPending, markSent, pendingUploads } from "./pending.js";
import { refusedUploads, startUncertain, startWithoutCard } from "./tasks.js";

let offered = []; // the uploads on offer (not those this page sends meanwhile)
let caps = null;
let starting = false;

const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
const names = (uploads) => uploads.map((u) => u.fileName);
const without = (list, gone) => list.filter((u) => !gone.includes(u));

/** The uploads in tasks to start: those with the same options together, maxFilesPerTask at most. */
function groups(uploads) {
  const byOptions = new Map();
  for (const upload of uploads) {
    const key = JSON.stringify(upload.options);
    byOptions.set(key, [...(byOptions.get(key) || []), upload]);
  }
  const size = caps.limits.maxFilesPerTask;
  const out = [];
  for (const group of byOptions.values()) {
    for (let first = 0; first < group.length; first += size) out.push(group.slice(first, first + size));
  }
  return out;
}

function render(notes = []) {
  const box = $("#unstarted");
  const count = offered.length;
  box.hidden = !count && !notes.length;
  $("#unstarted-start").hidden = !count;
  $("#unstarted-discard").textContent = count ? "Discard" : "Close";
  $("#unstarted-text").textContent = count
    ? `${plural(count, "image")} ${count === 1 ? "was" : "were"} uploaded but not started (${offered
        .map((u) => u.originalName)
        .join(", ")}). Start uses ${plural(count * caps.creditsPerImage, "credit")}. Discard only forgets ${
        count === 1 ? "it" : "them"
      } here: the server deletes uploads no task names by itself when they expire.`
    : "";
  $("#unstarted-error").textContent = notes.join(" ");
}

/**
 * Offer the uploads remembered from before this page loaded (called once
 * signed in). Those a start-task was on its way for when the last page went
 * may have started: forgotten, pointing to History. One expired on the
 * server meanwhile is refused by name on Start (and dropped then).
 */
export function offerUnstarted(capabilities) {
  caps = capabilities;
  const all = pendingUploads();
  const sent = all.filter((u) => u.sent);
  dropPending(names(sent));
  offered = without(all, sent);
  render(
    sent.length
      ? [
          `${sent.map((u) => u.originalName).join(", ")}: a task may have started for ${
            sent.length === 1 ? "it" : "them"
          } before the page reloaded: look in History before sending ${sent.length === 1 ? "it" : "them"} again.`,
        ]
      : [],
  );
}

/** Whether a Start of the offer is under way (leaving would lose its answer). */
export function offerStarting() {
  return starting;
}

/** Sign-out: nothing of it for the next person (pending.js forgets the uploads). */
export function withdrawOffer() {
  offered = [];
  starting = false;
  render();
}

/**
 * Start tasks for the offered uploads. One the server refuses by name
 * (expired, or unknown to it) is dropped and the rest are asked again; any
 * other refusal stops, the rest kept on offer; an answer lost (it may have
 * started) drops them, pointing to History.
 */
async function startOffered() {
  if (starting || !offered.length) return;
  starting = true;
  $("#unstarted-start").disabled = true;
  $("#unstarted-discard").disabled = true;
  const notes = [];
  let started = 0;
  for (const group of groups(offered)) {
    let left = group;
    let stop = false;
    while (left.length) {
      markSent(names(left)); // a reload before the answer: not offered again
      const answer = await startWithoutCard(left, left[0].options);
      if (answer === null || !starting) return; // signed out meanwhile
      if (!answer.failed) {
        started += 1;
        dropPending(names(left));
        offered = without(offered, left);
        break;
      }
      const err = answer.failed;
      const refused = refusedUploads(err, left);
      if (refused.length) {
        notes.push(sentence(explain(err)));
        dropPending(names(refused));
        offered = without(offered, refused);
        left = without(left, refused);
        continue;
      }
      if (startUncertain(err)) {
        notes.push(`${explain(err)} The answer was lost: look in History before sending these images again.`);
        dropPending(names(left));
        offered = without(offered, left);
      } else {
        markSent(names(left), false); // refused for sure: still on offer, after a reload too
        notes.push(explain(err));
      }
      stop = true;
      break;
    }
    if (stop) break;
  }
  starting = false;
  $("#unstarted-start").disabled = false;
  $("#unstarted-discard").disabled = false;
  render(notes);
  if (notes.length) announce(`${plural(started, "task")} started; the notice above the images says what was not.`);
}

function discard() {
  const count = offered.length;
  dropPending(names(offered));
  offered = [];
  render();
  if (count) {
    announce(`${plural(count, "upload")} forgotten here; the server deletes ${count === 1 ? "it" : "them"} when ${count === 1 ? "it expires" : "they expire"}.`);
  }
  placeFocus($("#upscale-title"));
}

export function initUnstarted() {
  $("#unstarted-start").addEventListener("click", startOffered);
  $("#unstarted-discard").addEventListener("click", discard);
}
