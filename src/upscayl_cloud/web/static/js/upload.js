// Uploading one file through pre-signed URLs: one PUT, or S3-style parts for
// big files (docs/api.md, "Multipart"). Progress is reported in bytes sent.

import { api, ApiError, putWithProgress } from "./api.js";

/** Parts in flight at once: enough to fill the pipe, few enough for a phone. */
const PART_CONCURRENCY = 3;

/** Tries of one PUT (or completion), and the waits between them (a blip or an S3 503 SlowDown). */
const TRIES = 3;
const WAIT_MS = [1000, 3000];
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Whether a failed call may succeed when sent again: no answer, or the store busy. */
function transient(err) {
  if (!(err instanceof ApiError) || err.code === "ABORTED") return false;
  return err.status === 0 || err.status === 408 || err.status === 429 || err.status >= 500;
}

/** send(), sent again after a transient failure (before which retrying() runs). */
async function withRetries(send, retrying = () => {}, signal = null) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await send();
    } catch (err) {
      if (attempt >= TRIES || !transient(err) || (signal && signal.aborted)) throw err;
      retrying();
      await sleep(WAIT_MS[attempt - 1]); // aborted meanwhile: the next try is refused at once
    }
  }
}

/**
 * putWithProgress, tried again after a transient failure: one failed PUT
 * used to fail a whole 100 MB file, sent again from its first byte.
 */
function putRetrying(url, blob, contentType, onProgress, signal = null) {
  return withRetries(() => putWithProgress(url, blob, contentType, onProgress, signal), () => onProgress(0), signal);
}

async function uploadParts(file, link, onProgress, signal) {
  const sent = new Array(link.parts.length).fill(0);
  const report = () => onProgress(sent.reduce((a, b) => a + b, 0));
  const done = [];
  // The first part that fails for good stops the others: they went on
  // sending every part (and drawing progress into a file marked failed).
  const stop = new AbortController();
  let failure = null;
  // A sign-out stops them too, as a failed part does.
  const signedOut = () => stop.abort();
  if (signal) {
    if (signal.aborted) stop.abort();
    else signal.addEventListener("abort", signedOut, { once: true });
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
        etag = await putRetrying(part.uploadURL, blob, null, (loaded) => {
          sent[index] = loaded;
          if (failure === null) report();
        }, stop.signal);
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
  if (signal) signal.removeEventListener("abort", signedOut);
  if (failure !== null) throw failure;
  done.sort((a, b) => a.PartNumber - b.PartNumber); // S3 wants ascending order
  // Tried again like a part: the server completes an upload once and
  // answers a repeat alike (docs/api.md), and one 503 here lost every part.
  // `signal` too: after a sign-out it went out later, with whichever key was
  // signed in by then.
  await withRetries(
    () => api.completeMultipart({ uploadId: link.uploadId, key: link.key, parts: done }, signal),
    () => {},
    signal,
  );
}

/**
 * Upload `file` (whose sniffed type is `type`); resolves with the entry
 * start-task takes. Multipart from the server's threshold on. `signal`
 * aborting (a sign-out) cancels every request of it, sent or to come.
 */
export async function uploadFile(file, type, caps, onProgress, signal = null) {
  const multipart = file.size >= caps.limits.multipartThresholdBytes;
  const described = { name: file.name, type, size: file.size };
  const link = await api.uploadUrl(described, multipart, signal);
  if (link.parts && link.parts.length) {
    await uploadParts(file, link, onProgress, signal);
  } else {
    await putRetrying(link.uploadURL, file, type, onProgress, signal);
  }
  onProgress(file.size);
  return { fileName: link.fileName, fileType: type, fileSize: file.size };
}
