// Errors in words a person understands. The server's own message is kept
// where it already says what to fix (it names the file and the problem);
// codes that only make sense to programmers get a sentence instead.

function minutes(seconds) {
  const m = Math.ceil(seconds / 60);
  if (m <= 1) return "about a minute";
  // A wait for uploads to expire can be a day; the hourly limit's, at most an hour.
  return m < 90 ? `${m} minutes` : `about ${Math.round(m / 60)} hours`;
}

/**
 * A sentence from the server's message, ending with a full stop. The server
 * writes commands in `backticks` (as its logs and the CLI do): on the page
 * they read as quotes, not as stray marks.
 */
export function sentence(message) {
  const quoted = message.replace(/`([^`]+)`/g, "“$1”");
  return /[.!?]$/.test(quoted) ? quoted : `${quoted}.`;
}

/**
 * A 503 (the server, or the store behind a signed link, busy or restarting):
 * a Retry-After past a minute is said; the page waits out shorter ones.
 */
function busy(error) {
  const wait = error.retryAfterSeconds;
  return wait > 60
    ? `The server is busy; try again in ${minutes(wait)}.`
    : "The server is busy; try again in a few seconds.";
}

/** A sentence for an ApiError (or any error). */
export function explain(error) {
  const code = error && error.code;
  const message = (error && error.message) || "";
  switch (code) {
    case "NETWORK":
      return "The server could not be reached. Check your connection, then try again.";
    case "TIMEOUT":
      // api.js says which: no answer, or an upload that stopped moving.
      return `${sentence(message)} Check your connection, then try again.`;
    case "ABORTED":
      return "Cancelled.";
    case "SERVICE_UNAVAILABLE":
      return busy(error);
    case "UNAUTHORIZED":
      return "This API key was not accepted. Check that you pasted all of it and that it has not been revoked.";
    case "INSUFFICIENT_CREDITS":
      // The server says how many are needed and how many are left.
      return message
        ? `${sentence(message)} Remove some images, or ask the server's operator for more credits.`
        : "Your account does not have enough credits for this. Ask the server's operator to add some (upscayl-cloud credits add).";
    case "RATE_LIMIT_EXCEEDED": {
      const wait = error.retryAfterSeconds;
      // The hourly request limit refuses with X-RateLimit-Remaining: 0. Any
      // other 429 (get-upload-url's cap on uploads waiting for a task) has
      // calls left, or no such header: its message says what to do.
      if (error.rateLimitRemaining !== 0 && message) {
        return sentence(message); // it says how long to wait, if waiting helps
      }
      return wait
        ? `Too many requests this hour. You can try again in ${minutes(wait)}.`
        : "Too many requests this hour. Please wait a little and try again.";
    }
    case "FACE_ENHANCEMENT_UNAVAILABLE":
      // The server says why: no model at all, or not the one it is set to use.
      return `This server cannot enhance faces${message ? `: ${sentence(message)}` : "."} Untick “Enhance faces” and try again.`;
    case "GONE":
      return "This download link has expired. History shows the result with a fresh one while it is kept.";
    case "FORBIDDEN":
      return "The upload link was refused (it may have expired). Try again.";
    case "NOT_FOUND":
      return "This task could not be found. It may belong to another key.";
    case "INTERNAL_SERVER_ERROR":
      return "Something went wrong on the server. Try again; if it keeps happening, tell the server's operator.";
    default:
      if (error && error.status === 503) return busy(error);
      if (error && error.status >= 500) {
        return "Something went wrong on the server. Try again; if it keeps happening, tell the server's operator.";
      }
      return message || "Something went wrong.";
  }
}

/** Human sizes, in the units the server's limits are written in (1 MB = 1024 KB). */
export function formatBytes(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KB", "MB", "GB"];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}

export function formatDate(ms) {
  return new Date(ms).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}
