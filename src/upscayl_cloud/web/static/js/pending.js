// Uploads no task names yet, remembered for the tab (sessionStorage) from the
// moment each is up until its task starts. They count against the account's
// cap on waiting uploads until the server deletes them (a day by default): a
// reload or a crash before start-task left them there, with nothing on the
// page to start them. unstarted.js offers them after a reload.
//
// Each is marked `sent` while a start-task naming it is on its way: a reload
// then may have left a task started (and charged) with the answer lost, so
// those are not offered to Start again (unstarted.js points to History). A
// definite refusal (a 4xx) marks them unsent again.

const STORAGE = "upscayl-cloud.unstarted";

/** [{fileName, fileType, fileSize, originalName, options, order, sent}], in the order chosen. */
export function pendingUploads() {
  try {
    const list = JSON.parse(sessionStorage.getItem(STORAGE) || "[]");
    return Array.isArray(list) ? list : [];
  } catch {
    return [];
  }
}

function store(list) {
  if (list.length) sessionStorage.setItem(STORAGE, JSON.stringify(list));
  else sessionStorage.removeItem(STORAGE);
}

/**
 * Remember `upload` (from upload.js) of the file `originalName`, to be
 * started with `options`; `order` is the file's place in the order chosen
 * (two files at a time finish in any order).
 */
export function keepPending(upload, originalName, options, order) {
  const { fileName, fileType, fileSize } = upload;
  const kept = { fileName, fileType, fileSize, originalName, options, order, sent: false };
  const list = [...pendingUploads().filter((u) => u.fileName !== fileName), kept];
  store(list.sort((a, b) => a.order - b.order));
}

/**
 * These uploads (by fileName) are named by a start-task about to be sent
 * (`sent` true), or by one the server refused for sure (`sent` false).
 */
export function markSent(fileNames, sent = true) {
  const these = new Set(fileNames);
  store(pendingUploads().map((u) => (these.has(u.fileName) ? { ...u, sent } : u)));
}

/** Forget these uploads (by fileName): started, perhaps started, refused for good or discarded. */
export function dropPending(fileNames) {
  const gone = new Set(fileNames);
  store(pendingUploads().filter((u) => !gone.has(u.fileName)));
}

/** Sign-out, or another key: these uploads are not the next person's to start. */
export function clearPending() {
  sessionStorage.removeItem(STORAGE);
}
