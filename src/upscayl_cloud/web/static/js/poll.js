// Watching a task without burning the key's hourly request budget:
// get-task-status allows 100 calls an hour per key (docs/api.md, "Rate
// limits"), so the interval grows while a task runs, stretches when few calls
// are left, and a 429 waits for the server's Retry-After instead of failing.

import { api, ApiError, rateLimits } from "./api.js";

const STEPS_MS = [700, 1000, 1500, 2000, 3000, 5000, 8000];
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function nextDelay(attempt) {
  const base = STEPS_MS[Math.min(attempt, STEPS_MS.length - 1)];
  const left = rateLimits.get("get-task-status");
  if (left && left.remaining < 10) {
    // Spread what is left over the time until the window frees a slot.
    const untilReset = Math.max(0, left.resetAt - Date.now());
    return Math.max(base, untilReset / Math.max(1, left.remaining), 15000);
  }
  return base;
}

/** Poll until completed or failed; onUpdate(data) for each answer, onWait(seconds) on 429. */
export async function watchTask(taskId, onUpdate, onWait) {
  for (let attempt = 0; ; attempt++) {
    let data;
    try {
      data = await api.taskStatus(taskId);
    } catch (err) {
      if (err instanceof ApiError && (err.code === "RATE_LIMIT_EXCEEDED" || err.status === 0)) {
        const wait = err.retryAfterSeconds ?? 10;
        onWait(wait, err);
        await sleep(wait * 1000);
        continue;
      }
      throw err;
    }
    onUpdate(data);
    if (data.status === "completed" || data.status === "failed") return data;
    await sleep(nextDelay(attempt));
  }
}
