// The public API, as any client calls it: JSON in, {"status", "data"} out,
// errors as {"error": CODE, "message"}. No private routes: the page can do
// exactly what the key can do with curl (docs/api.md).

/**
 * A refusal or failure, with the server's code and message kept intact.
 * `rateLimitRemaining` is the response's X-RateLimit-Remaining (null when it
 * had none): 0 on a refusal by the hourly request limit, more on a 429 for
 * another reason (the cap on uploads waiting for a task).
 */
export class ApiError extends Error {
  constructor(status, code, message, retryAfterSeconds = null, rateLimitRemaining = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfterSeconds = retryAfterSeconds;
    this.rateLimitRemaining = rateLimitRemaining;
  }
}

/** What is left of a rate limit, per operation, from the last response. */
export const rateLimits = new Map();

let apiKey = null;
let keyRefused = () => {};

export function setKey(key) {
  apiKey = key;
}

/** fn(error) runs when a call made with the key still in use is answered 401 (a key revoked mid-session). */
export function onKeyRefused(fn) {
  keyRefused = fn;
}

function retryAfter(headers) {
  const value = headers.get("Retry-After");
  if (!value) return null;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return seconds;
  const when = Date.parse(value); // HTTP-date form
  return Number.isNaN(when) ? null : Math.max(0, (when - Date.now()) / 1000);
}

function remainingOf(headers) {
  const value = headers.get("X-RateLimit-Remaining");
  const remaining = value === null || value.trim() === "" ? NaN : Number(value);
  return Number.isFinite(remaining) ? remaining : null;
}

function remember(operation, headers) {
  const remaining = headers.get("X-RateLimit-Remaining");
  if (remaining !== null) {
    rateLimits.set(operation, {
      remaining: Number(remaining),
      limit: Number(headers.get("X-RateLimit-Limit")),
      resetAt: Number(headers.get("X-RateLimit-Reset")) * 1000,
    });
  }
}

async function errorFrom(response) {
  let code = "HTTP_" + response.status;
  let message = response.statusText || "Request failed";
  try {
    const body = await response.json();
    code = body.error || code;
    message = body.message || message;
  } catch {
    // Not our JSON (a proxy's error page): keep the status line.
  }
  const { headers } = response;
  return new ApiError(response.status, code, message, retryAfter(headers), remainingOf(headers));
}

/**
 * How long the page waits before giving a request up as stalled (a connection
 * that neither answers nor fails kept the page busy for good): an API call
 * with no answer, an upload with no progress. Tests shorten them (they import
 * this module, the page's own instance, and set the fields).
 */
export const timeouts = { answerMs: 60_000, uploadIdleMs: 60_000 };

/** A wait in words: "45 s", "1 minute". */
function span(ms) {
  const seconds = Math.max(1, Math.round(ms / 1000));
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.round(seconds / 60);
  return `${minutes} minute${minutes === 1 ? "" : "s"}`;
}

/**
 * A signal for one request: aborted by `outer` (a sign-out, a Cancel) or
 * once `ms` pass; `expired()` tells the two apart, `clear()` ends the watch.
 */
function deadline(outer, ms) {
  const controller = new AbortController();
  let expired = false;
  const stop = () => controller.abort();
  if (outer) {
    if (outer.aborted) controller.abort();
    else outer.addEventListener("abort", stop, { once: true });
  }
  const timer = setTimeout(() => {
    expired = true;
    controller.abort();
  }, ms);
  return {
    signal: controller.signal,
    expired: () => expired,
    clear: () => {
      clearTimeout(timer);
      if (outer) outer.removeEventListener("abort", stop);
    },
  };
}

/**
 * Call an operation; returns the parsed body. Network failures become
 * ApiError(0, "NETWORK"); `signal` aborting cancels it (ApiError(0,
 * "ABORTED")); no answer within timeouts.answerMs, ApiError(0, "TIMEOUT").
 */
export async function request(path, { method = "POST", json, form, signal = null } = {}) {
  const headers = {};
  // The key this call carries: a 401 for it says nothing about a key set since.
  const sentWith = apiKey;
  if (sentWith) headers["X-API-Key"] = sentWith;
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form; // the browser writes the multipart boundary
  }
  const limit = deadline(signal, timeouts.answerMs);
  const failed = (err) => {
    if (limit.expired()) return new ApiError(0, "TIMEOUT", `The server did not answer within ${span(timeouts.answerMs)}`);
    if (signal && signal.aborted) return new ApiError(0, "ABORTED", "The request was cancelled");
    return err instanceof ApiError ? err : new ApiError(0, "NETWORK", String(err && err.message ? err.message : err));
  };
  try {
    let response;
    try {
      response = await fetch(path, { method, headers, body, cache: "no-store", signal: limit.signal });
    } catch (err) {
      throw failed(err);
    }
    remember(path.replace(/^\//, ""), response.headers);
    if (!response.ok) {
      const error = await errorFrom(response);
      // Only for the key in use: a late 401 for a call made before a sign-out
      // (the key revoked meanwhile) signed the next person out.
      if (response.status === 401 && sentWith && sentWith === apiKey) keyRefused(error);
      throw error;
    }
    try {
      return await response.json();
    } catch (err) {
      // The body cut off by the deadline or a cancel; otherwise not JSON at all.
      if (limit.expired() || (signal && signal.aborted)) throw failed(err);
      throw err;
    }
  } finally {
    limit.clear();
  }
}

export const api = {
  capabilities: () => request("/capabilities", { method: "GET" }).then((b) => b.data),
  uploadUrl: (file, multipart, signal = null) =>
    request("/get-upload-url", {
      signal,
      json: {
        originalFileName: file.name,
        fileType: file.type,
        fileSize: file.size,
        ...(multipart ? { multipart: true } : {}),
      },
    }).then((b) => b.data),
  completeMultipart: (data, signal = null) => request("/complete-multipart-upload", { json: { data }, signal }),
  startTask: (form) => request("/start-task", { form }).then((b) => b.data),
  taskStatus: (taskId) => request("/get-task-status", { json: { taskId } }).then((b) => b.data),
  history: (query) => request("/get-upscayl-history", { json: query }),
};

/**
 * PUT bytes to a signed link with upload progress (fetch has no upload
 * progress events, XMLHttpRequest does). Resolves with the response's ETag;
 * `signal` aborting cancels the request (rejects with code "ABORTED"), and so
 * does timeouts.uploadIdleMs without progress or answer (code "TIMEOUT").
 */
export function putWithProgress(url, blob, contentType, onProgress, signal = null) {
  return new Promise((resolve, reject) => {
    if (signal && signal.aborted) {
      reject(new ApiError(0, "ABORTED", "The upload was cancelled"));
      return;
    }
    const xhr = new XMLHttpRequest();
    const abort = () => xhr.abort();
    // The signal may be a whole sign-in's (upscale.js): not kept listening for every file sent.
    if (signal) signal.addEventListener("abort", abort, { once: true });
    let timer = null;
    let stalled = false;
    const idle = () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        stalled = true;
        xhr.abort();
      }, timeouts.uploadIdleMs);
    };
    xhr.addEventListener("loadend", () => {
      clearTimeout(timer);
      if (signal) signal.removeEventListener("abort", abort);
    });
    xhr.onabort = () =>
      reject(
        stalled
          ? new ApiError(0, "TIMEOUT", `The upload made no progress for ${span(timeouts.uploadIdleMs)}`)
          : new ApiError(0, "ABORTED", "The upload was cancelled"),
      );
    xhr.open("PUT", url);
    if (contentType) xhr.setRequestHeader("Content-Type", contentType);
    xhr.upload.onprogress = (event) => {
      idle();
      onProgress(event.loaded);
    };
    xhr.onprogress = idle; // the answer arriving
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        resolve(xhr.getResponseHeader("ETag"));
        return;
      }
      let code = "HTTP_" + xhr.status;
      let message = xhr.statusText || "Upload failed";
      try {
        const body = JSON.parse(xhr.responseText);
        code = body.error || code;
        message = body.message || message;
      } catch {
        // S3 answers XML; keep the status line.
      }
      // Retry-After too: a busy store says how long to wait (upload.js waits it).
      const headers = { get: (name) => xhr.getResponseHeader(name) };
      reject(new ApiError(xhr.status, code, message, retryAfter(headers), remainingOf(headers)));
    };
    xhr.onerror = () => reject(new ApiError(0, "NETWORK", "The upload was interrupted"));
    idle();
    xhr.send(blob);
  });
}
