// What a picked file really is, from its first bytes, and whether the server
// would take it. A port of services/imagecheck.py and services/limits.py:
// the same magic bytes, the same header dimensions and the same limits (read
// from GET /capabilities), worded like the server, so a file is refused here
// exactly when start-task would refuse it, before anything is uploaded.

const HEAD_BYTES = 256 * 1024;

function sniff(b) {
  if (b.length >= 8 && [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a].every((v, i) => b[i] === v)) {
    return "image/png";
  }
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return "image/jpeg";
  const ascii = (from, to) => String.fromCharCode(...b.subarray(from, to));
  if (b.length >= 12 && ascii(0, 4) === "RIFF" && ascii(8, 12) === "WEBP") return "image/webp";
  return null;
}

function pngSize(b, view) {
  if (b.length >= 24 && String.fromCharCode(...b.subarray(12, 16)) === "IHDR") {
    return [view.getUint32(16), view.getUint32(20)];
  }
  return null;
}

function jpegSize(b, view) {
  let pos = 2;
  while (pos + 4 <= b.length) {
    if (b[pos] !== 0xff) return null;
    const marker = b[pos + 1];
    if (marker === 0xff) {
      pos += 1; // fill byte
      continue;
    }
    if (marker === 0xd8 || marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) {
      pos += 2;
      continue;
    }
    const length = view.getUint16(pos + 2);
    const isSof = marker >= 0xc0 && marker <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(marker);
    if (isSof && pos + 9 <= b.length) return [view.getUint16(pos + 7), view.getUint16(pos + 5)];
    pos += 2 + length;
  }
  return null;
}

function webpSize(b, view) {
  const chunk = String.fromCharCode(...b.subarray(12, 16));
  if (chunk === "VP8 " && b.length >= 30) {
    return [view.getUint16(26, true) & 0x3fff, view.getUint16(28, true) & 0x3fff];
  }
  if (chunk === "VP8L" && b.length >= 25) {
    const bits = view.getUint32(21, true);
    return [(bits & 0x3fff) + 1, ((bits >>> 14) & 0x3fff) + 1];
  }
  if (chunk === "VP8X" && b.length >= 30) {
    const u24 = (at) => b[at] | (b[at + 1] << 8) | (b[at + 2] << 16);
    return [u24(24) + 1, u24(27) + 1];
  }
  return null;
}

/** {type, width, height} from the file's header; type null when not JPEG/PNG/WebP. */
export async function inspectFile(file) {
  const bytes = new Uint8Array(await file.slice(0, HEAD_BYTES).arrayBuffer());
  const view = new DataView(bytes.buffer);
  const type = sniff(bytes);
  if (!type) return { type: null, width: null, height: null };
  const reader = { "image/png": pngSize, "image/jpeg": jpegSize, "image/webp": webpSize }[type];
  const size = reader(bytes, view);
  return { type, width: size ? size[0] : null, height: size ? size[1] : null };
}

/** Why the server would refuse this file with these options, in its words; null if it would not. */
export function refusal(info, file, limits, scale, format) {
  if (!info.type || !limits.fileTypes.includes(info.type)) {
    return "Unsupported file type. Allowed: JPEG, PNG, WEBP";
  }
  if (file.size < 1) return "The file is empty";
  if (file.size > limits.maxUploadBytes) {
    return `File size exceeds maximum limit of ${Math.round(limits.maxUploadBytes / 1048576)}MB`;
  }
  const { width, height } = info;
  if (!width || !height) return null; // the worker decides, as on the server
  if (width * height > limits.maxSourcePixels) {
    return `${width}x${height} pixels exceeds the limit of ${limits.maxSourcePixels} pixels`;
  }
  if (Math.max(width, height) > limits.maxSourceEdge) {
    return `${width}x${height} exceeds the longest accepted edge of ${limits.maxSourceEdge}`;
  }
  const outW = width * scale;
  const outH = height * scale;
  if (outW * outH > limits.maxOutputPixels) {
    return `the ${scale}x output (${outW}x${outH}) exceeds the limit of ${limits.maxOutputPixels} pixels; choose a smaller scale`;
  }
  if (format === "webp" && outW * outH > limits.maxWebpOutputPixels) {
    return `a WebP output of ${outW}x${outH} exceeds the WebP limit of ${limits.maxWebpOutputPixels} pixels; choose png or jpg, or a smaller scale`;
  }
  const edge = limits.maxOutputEdge[format];
  if (edge && Math.max(outW, outH) > edge) {
    return `${format} cannot store an edge of ${Math.max(outW, outH)} pixels (at most ${edge})`;
  }
  return null;
}
