// Uploading one file through pre-signed URLs: one PUT, or S3-style parts for
// big files (docs/api.md, "Multipart"). Progress is reported in bytes sent.

import { api, putWithProgress } from "./api.js";

/** Parts in flight at once: enough to fill the pipe, few enough for a phone. */
const PART_CONCURRENCY = 3;

async function uploadParts(file, link, onProgress) {
  const sent = new Array(link.parts.length).fill(0);
  const report = () => onProgress(sent.reduce((a, b) => a + b, 0));
  const done = [];
  let next = 0;
  async function worker() {
    while (next < link.parts.length) {
      const index = next++;
      const part = link.parts[index];
      const start = (part.partNumber - 1) * link.partSize;
      const blob = file.slice(start, Math.min(start + link.partSize, file.size));
      const etag = await putWithProgress(part.uploadURL, blob, null, (loaded) => {
        sent[index] = loaded;
        report();
      });
      sent[index] = blob.size;
      report();
      done.push({ PartNumber: part.partNumber, ETag: etag });
    }
  }
  await Promise.all(Array.from({ length: PART_CONCURRENCY }, worker));
  done.sort((a, b) => a.PartNumber - b.PartNumber); // S3 wants ascending order
  await api.completeMultipart({ uploadId: link.uploadId, key: link.key, parts: done });
}

/**
 * Upload `file` (whose sniffed type is `type`); resolves with the entry
 * start-task takes. Multipart from the server's threshold on.
 */
export async function uploadFile(file, type, caps, onProgress) {
  const multipart = file.size >= caps.limits.multipartThresholdBytes;
  const described = { name: file.name, type, size: file.size };
  const link = await api.uploadUrl(described, multipart);
  if (link.parts && link.parts.length) {
    await uploadParts(file, link, onProgress);
  } else {
    await putWithProgress(link.uploadURL, file, type, onProgress);
  }
  onProgress(file.size);
  return { fileName: link.fileName, fileType: type, fileSize: file.size };
}
