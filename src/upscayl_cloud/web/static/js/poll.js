// Watching a task without burning the key's hourly request budget:
// get-task-status allows 100 calls an hour per key (docs/api.md, "Rate
// limits"), so the interval grows while a task runs, stretches when few calls
// are left, and a 429 waits for the server's Retry-After instead of failing;
// a 500 is asked again only a few times, then shown.

import { api, ApiError, rateLimits } from "./api.js";

const STEPS_MS = [700, 1000, 1500, 2000, 3000, 5000, 8000];
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function nextDelay(attempt) {
  const base = STEPS_MS[Math.min(attempt, STEPS_MS.length - 1)];
  const left = rateLimits.get("get-task-status");
  // Past half the hourly budget, what is left is spread over the time until
  // the window frees a slot: at 8 s a call the 100 an hour were gone in 13
  // minutes, and a long task then learned of its end minutes late (as did
  // every other program using the key).
  const half = left && Number.isFinite(left.limit) ? left.limit / 2 : 0;
  if (left && left.remaining < Math.max(10, half)) {
    const untilReset = Math.max(0, left.resetAt - Date.now());
    return Math.max(base, untilReset / Math.max(1, left.remaining));
  }
  return base;
}

/**
 * Whether a failed status call is worth waiting out rather than reporting:
 * any 429 (ours, or a proxy's without our JSON), no answer at all, the
 * server busy or restarting (a 503 with its Retry-After, a proxy's 502 or
 * 504, a 408), or a 500: the call only reads, so asking again is safe (the
 * Python client does), and one passing error (a locked database) ended the
 * watch for good. A 500 is waited out only a few times in a row, though
 * (see MAX_500S). The task runs on meanwhile.
 */
export function waitable(err) {
  return (
    err instanceof ApiError &&
    (err.code === "RATE_LIMIT_EXCEEDED" || [0, 408, 429, 500, 502, 503, 504].includes(err.status))
  );
}

/**
 * 500s without an answer between them after which the error is shown: a lasting one (storage
 * credentials expired, so no link can be signed) was asked about every 10 s
 * for good, spending the key's get-task-status budget in 17 minutes, and
 * the card never said what was wrong. 503s, 429s and no answer are not
 * counted: those say to wait.
 */
const MAX_500S = 4;

/**
 * Poll until completed or failed; onUpdate(data) for each answer. While it
 * waits (see waitable), onWait(secondsLeft, error) is
 * called every second, so the page can count down and say which it is.
 * Resolves with the final status, or null once `signal` is aborted (signed out).
 */
export async function watchTask(taskId, onUpdate, onWait, signal) {
  let errors = 0; // 500s since the last answer (a 503 or 429 between them is no answer)
  for (let attempt = 0; ; attempt++) {
    if (signal && signal.aborted) return null;
    let data;
    try {
      data = await api.taskStatus(taskId);
    } catch (err) {
      if (err.status === 500) errors += 1;
      if (waitable(err) && errors < MAX_500S) {
        // A 500 is waited out longer each time (5 s, 10 s, 20 s without a
        // Retry-After); the others as long as the server says, or 10 s.
        const wait = err.status === 500 ? (err.retryAfterSeconds ?? 5) * 2 ** (errors - 1) : (err.retryAfterSeconds ?? 10);
        for (let left = Math.max(1, Math.ceil(wait)); left > 0; left--) {
          if (signal && signal.aborted) return null;
          onWait(left, err);
          await sleep(1000);
        }
        continue;
      }
      throw err;
    }
    if (signal && signal.aborted) return null;
    errors = 0; // it was passing after all
    onUpdate(data);
    if (data.status === "completed" || data.status === "failed") return data;
    await sleep(nextDelay(attempt));
  }
}
