// Uploads no task names yet, remembered for the tab (sessionStorage) from the
// moment each is up until its task starts. They count against the account's
// cap on waiting uploads until they expire (a day by default): a reload or a
// crash before start-task left them there, with nothing on the page to start
// them. unstarted.js offers them after a reload.

const STORAGE = "upscayl-cloud.unstarted";

/** [{fileName, fileType, fileSize, expiresAt, originalName, options, order}], in the order chosen. */
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
  const { fileName, fileType, fileSize, expiresAt } = upload;
  const kept = { fileName, fileType, fileSize, expiresAt, originalName, options, order };
  const list = [...pendingUploads().filter((u) => u.fileName !== fileName), kept];
  store(list.sort((a, b) => a.order - b.order));
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
