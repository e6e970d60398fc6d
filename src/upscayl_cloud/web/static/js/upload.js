// Uploading one file through pre-signed URLs: one PUT, or S3-style parts for
// big files (docs/api.md, "Multipart"). Progress is reported in bytes sent.

import { api, ApiError, putWithProgress } from "./api.js";

/** Parts in flight at once: enough to fill the pipe, few enough for a phone. */
const PART_CONCURRENCY = 3;

/** Tries of one PUT (or completion), and the least waits between them (a blip or an S3 503 SlowDown). */
const TRIES = 3;
const WAIT_MS = [1000, 3000];
/**
 * The longest Retry-After waited out in place: a longer one (an hourly limit,
 * a store busy for half an hour) fails the file at once, saying when to try
 * again (messages.js), rather than holding the page that long.
 */
export const MAX_WAIT_S = 60;

/** A wait that a Cancel or a sign-out (`signal`) ends early. */
function sleep(ms, signal) {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      if (signal) signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    if (signal) signal.addEventListener("abort", done, { once: true });
  });
}

/** Whether a failed call may succeed when sent again: no answer, or the store busy. */
function transient(err) {
  if (!(err instanceof ApiError) || err.code === "ABORTED") return false;
  return err.status === 0 || err.status === 408 || err.status === 429 || err.status >= 500;
}

/**
 * Whether `err` says to wait longer than a run should: the hourly request
 * limit (X-RateLimit-Remaining: 0), or a Retry-After past MAX_WAIT_S. The
 * next files would meet it too (upscale.js stops sending them).
 */
export function tooLongToWait(err) {
  if (!(err instanceof ApiError) || ![429, 503].includes(err.status)) return false;
  return err.rateLimitRemaining === 0 || (err.retryAfterSeconds ?? 0) > MAX_WAIT_S;
}

/**
 * send(), sent again after a transient failure, waiting the step or the
 * server's Retry-After, whichever is longer (onWait(seconds) runs first).
 */
async function withRetries(send, onWait, signal) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await send();
    } catch (err) {
      if (attempt >= TRIES || !transient(err) || (signal && signal.aborted)) throw err;
      const asked = err.retryAfterSeconds ?? 0;
      if (asked > MAX_WAIT_S) throw err;
      const wait = Math.max(WAIT_MS[attempt - 1], asked * 1000);
      onWait(Math.ceil(wait / 1000));
      await sleep(wait, signal); // aborted meanwhile: the next try is refused at once
    }
  }
}

/**
 * putWithProgress, tried again after a transient failure: one failed PUT
 * used to fail a whole 100 MB file, sent again from its first byte.
 */
function putRetrying(url, blob, contentType, onProgress, onWait, signal) {
  const waiting = (seconds) => {
    onProgress(0);
    onWait(seconds);
  };
  return withRetries(() => putWithProgress(url, blob, contentType, onProgress, signal), waiting, signal);
}

/**
 * Complete a multipart upload whose parts are all up. A completion that
 * fails where trying later may work (no answer, a limit, the server busy,
 * a Cancel) carries `resume` = {link, done}: uploadFile takes it back and
 * sends only the completion (the next press re-sent every part).
 */
async function complete(link, done, onWait, signal) {
  try {
    // Tried again like a part: the server completes an upload once and
    // answers a repeat alike (docs/api.md), and one 503 here lost every part.
    // `signal` too: after a sign-out it went out later, with whichever key was
    // signed in by then.
    await withRetries(
      () => api.completeMultipart({ uploadId: link.uploadId, key: link.key, parts: done }, signal),
      onWait,
      signal,
    );
  } catch (err) {
    if (err instanceof ApiError && (transient(err) || err.code === "ABORTED")) err.resume = { link, done };
    throw err;
  }
}

async function uploadParts(file, link, onProgress, onWait, signal) {
  const sent = new Array(link.parts.length).fill(0);
  const report = () => onProgress(sent.reduce((a, b) => a + b, 0));
  const done = [];
  // The first part that fails for good stops the others: they went on
  // sending every part (and drawing progress into a file marked failed).
  const stop = new AbortController();
  let failure = null;
  // A sign-out or a Cancel stops them too, as a failed part does.
  const cancelled = () => stop.abort();
  if (signal) {
    if (signal.aborted) stop.abort();
    else signal.addEventListener("abort", cancelled, { once: true });
  }
  let next = 0;
  async function worker() {
    while (failure === null && next < link.parts.length) {
      const index = next++;
      const part = link.parts[index];
      const start = (part.partNumber - 1) * link.partSize;
      const blob = file.slice(start, Math.min(start + link.partSize, file.size));
      let etag;
      try {
        const progress = (loaded) => {
          sent[index] = loaded;
          if (failure === null) report();
        };
        etag = await putRetrying(part.uploadURL, blob, null, progress, onWait, stop.signal);
      } catch (err) {
        if (failure === null) {
          failure = err;
          stop.abort();
        }
        return;
      }
      sent[index] = blob.size;
      report();
      done.push({ PartNumber: part.partNumber, ETag: etag });
    }
  }
  await Promise.all(Array.from({ length: PART_CONCURRENCY }, worker));
  if (signal) signal.removeEventListener("abort", cancelled);
  if (failure !== null) throw failure;
  done.sort((a, b) => a.PartNumber - b.PartNumber); // S3 wants ascending order
  await complete(link, done, onWait, signal);
}

/**
 * What start-task needs of an upload. (get-upload-url's expiresAt is when
 * the signed link stops working, not when the server forgets the upload.)
 */
function uploaded(link, type, size) {
  return { fileName: link.fileName, fileType: type, fileSize: size };
}

/**
 * Upload `file` (whose sniffed type is `type`); resolves with the upload
 * ({fileName, fileType, fileSize}). Multipart from the server's
 * threshold on. onProgress(bytes) as it goes; onWait(seconds) before a try
 * again. `signal` aborting (a sign-out, a Cancel) cancels every request of
 * it, sent or to come. `resume` (a failed completion's err.resume) sends
 * only the completion.
 */
export async function uploadFile(file, type, caps, { onProgress, onWait = () => {}, signal = null, resume = null }) {
  if (resume) {
    onProgress(file.size);
    await complete(resume.link, resume.done, onWait, signal);
    return uploaded(resume.link, type, file.size);
  }
  const multipart = file.size >= caps.limits.multipartThresholdBytes;
  const described = { name: file.name, type, size: file.size };
  const link = await api.uploadUrl(described, multipart, signal);
  if (link.parts && link.parts.length) {
    await uploadParts(file, link, onProgress, onWait, signal);
  } else {
    await putRetrying(link.uploadURL, file, type, onProgress, onWait, signal);
  }
  onProgress(file.size);
  return uploaded(link, type, file.size);
}
