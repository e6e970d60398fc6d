// What a picked file really is, from its first bytes, and whether the server
// would take it. A port of services/imagecheck.py and services/limits.py:
// the same magic bytes, the same header walk and dimensions, the same limits
// (read from GET /capabilities) and the same words, so a file is refused here
// exactly when start-task would refuse it, before anything is uploaded.

/** Enough for any PNG/WebP header and for most JPEGs (SOF after EXIF/ICC). */
const HEAD_BYTES = 256 * 1024;
/** A JPEG's frame header (SOF) must start within this many bytes... */
const MAX_JPEG_HEADER_BYTES = 8 * 1024 * 1024;
/** ...after at most this many markers. */
const MAX_JPEG_SEGMENTS = 1024;

const truncated = (kind) => `is not a complete ${kind} image: its header ends before its dimensions`;
const ascii = (b, from, to) => String.fromCharCode(...b.subarray(from, to));

/** Python's repr() of a bytes object, as the server words an unknown chunk. */
function bytesRepr(b) {
  const quote = b.includes(0x27) && !b.includes(0x22) ? '"' : "'";
  let out = "b" + quote;
  for (const c of b) {
    if (c === quote.charCodeAt(0) || c === 0x5c) out += "\\" + String.fromCharCode(c);
    else if (c === 0x09) out += "\\t";
    else if (c === 0x0a) out += "\\n";
    else if (c === 0x0d) out += "\\r";
    else if (c < 0x20 || c >= 0x7f) out += "\\x" + c.toString(16).padStart(2, "0");
    else out += String.fromCharCode(c);
  }
  return out + quote;
}

function sniff(b) {
  if (b.length >= 8 && [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a].every((v, i) => b[i] === v)) {
    return "image/png";
  }
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return "image/jpeg";
  if (b.length >= 12 && ascii(b, 0, 4) === "RIFF" && ascii(b, 8, 12) === "WEBP") return "image/webp";
  return null;
}

/** [width, height], or why the header gives none. */
function pngSize(b, view) {
  if (b.length < 16) return truncated("PNG");
  if (ascii(b, 12, 16) !== "IHDR") return "is not a valid PNG image: its first chunk is not IHDR";
  if (b.length < 24) return truncated("PNG");
  return [view.getUint32(16), view.getUint32(20)];
}

const WEBP_HEADER_BYTES = new Map([["VP8 ", 30], ["VP8L", 25], ["VP8X", 30]]);

/** [width, height], or why the header gives none. */
function webpSize(b, view) {
  const chunk = b.subarray(12, 16);
  const needed = WEBP_HEADER_BYTES.get(ascii(b, 12, 16));
  if (b.length < 16) return truncated("WebP");
  if (needed === undefined) {
    return `is not a valid WebP image: its first chunk is ${bytesRepr(chunk)}, not VP8, VP8L or VP8X`;
  }
  if (b.length < needed) return truncated("WebP");
  const kind = ascii(b, 12, 16);
  if (kind === "VP8 ") return [view.getUint16(26, true) & 0x3fff, view.getUint16(28, true) & 0x3fff];
  if (kind === "VP8L") {
    const bits = view.getUint32(21, true);
    return [(bits & 0x3fff) + 1, ((bits >>> 14) & 0x3fff) + 1];
  }
  const u24 = (at) => b[at] | (b[at + 1] << 8) | (b[at + 2] << 16);
  return [u24(24) + 1, u24(27) + 1];
}

/**
 * Walk the marker segments in `b` (the first bytes of a `total`-byte file)
 * from `pos` to the frame header (SOFn), which holds the size: services/
 * imagecheck.py's walk_jpeg. Only segment headers are looked at. Returns
 * {pos, segments} and one of size, broken, refused, need; `need` asks for at
 * least that many bytes of the file, to walk on from pos and segments.
 */
function walkJpeg(b, view, total, pos = 2, segments = 0) {
  const stop = (found) => ({ pos, segments, ...found });
  const outOfBytes = (needed) => {
    if (needed > total) return stop({ broken: truncated("JPEG") });
    if (needed > MAX_JPEG_HEADER_BYTES) {
      return stop({
        refused:
          "has its JPEG frame header (SOF) beyond the first " +
          `${MAX_JPEG_HEADER_BYTES / (1024 * 1024)} MiB; strip the metadata ` +
          "before it and upload the image again",
      });
    }
    return stop({ need: needed });
  };
  for (;;) {
    if (segments >= MAX_JPEG_SEGMENTS) {
      return stop({
        refused:
          `has more than ${MAX_JPEG_SEGMENTS} JPEG segments before its frame ` +
          "header (SOF); strip the metadata and upload the image again",
      });
    }
    if (pos + 2 > b.length) return outOfBytes(pos + 2);
    if (b[pos] !== 0xff) return stop({ broken: `is not a valid JPEG image: no segment marker at byte ${pos}` });
    const marker = b[pos + 1];
    if (marker === 0xff) {
      // Fill bytes: skip the whole run at once.
      let next = pos + 1;
      while (next < b.length && b[next] === 0xff) next += 1;
      pos = next - 1;
      continue;
    }
    segments += 1;
    if (marker === 0xd8 || marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) {
      pos += 2; // no length field
      continue;
    }
    if (marker === 0xd9 || marker === 0xda) {
      const where = marker === 0xd9 ? "its end" : "its image data";
      return stop({ broken: `is not a valid JPEG image: it has no frame header (SOF) before ${where}` });
    }
    if (pos + 4 > b.length) return outOfBytes(pos + 4);
    const length = view.getUint16(pos + 2);
    if (length < 2) {
      return stop({ broken: `is not a valid JPEG image: a segment length of ${length} at byte ${pos}` });
    }
    if (marker >= 0xc0 && marker <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(marker)) {
      if (length < 8) return stop({ broken: `is not a valid JPEG image: a frame header of ${length} bytes` });
      if (pos + 9 > b.length) return outOfBytes(pos + 9);
      return stop({ size: [view.getUint16(pos + 7), view.getUint16(pos + 5)] });
    }
    pos += 2 + length;
  }
}

async function read(file, start, end) {
  return new Uint8Array(await file.slice(start, end).arrayBuffer());
}

/**
 * A JPEG's walk over as much of the file as it needs: the first bytes, then,
 * when its frame header lies further on, only the bytes after those already
 * read, at least as many again (as start-task reads a stored file), never
 * past MAX_JPEG_HEADER_BYTES: a 100 MB file is not read whole.
 */
async function jpegWalk(file, head) {
  let bytes = head;
  let walk = walkJpeg(bytes, new DataView(bytes.buffer), file.size);
  while (walk.need !== undefined) {
    const length = Math.min(file.size, MAX_JPEG_HEADER_BYTES, Math.max(walk.need, 2 * bytes.length));
    const more = await read(file, bytes.length, length);
    const joined = new Uint8Array(bytes.length + more.length);
    joined.set(bytes);
    joined.set(more, bytes.length);
    bytes = joined;
    walk = walkJpeg(bytes, new DataView(bytes.buffer), file.size, walk.pos, walk.segments);
  }
  return walk;
}

/**
 * {type, width, height, broken, refused} from the file's header: type null
 * when not JPEG/PNG/WebP; broken says why the header gives no size
 * (truncated or malformed), refused why reading on was refused (the JPEG
 * limits), both in the server's words.
 */
export async function inspectFile(file) {
  const head = await read(file, 0, HEAD_BYTES);
  const type = sniff(head);
  const info = { type, width: null, height: null, broken: null, refused: null };
  if (!type) return info;
  if (type === "image/jpeg") {
    const walk = await jpegWalk(file, head);
    if (walk.size) [info.width, info.height] = walk.size;
    info.broken = walk.broken ?? null;
    info.refused = walk.refused ?? null;
    return info;
  }
  const size = (type === "image/png" ? pngSize : webpSize)(head, new DataView(head.buffer));
  if (typeof size === "string") info.broken = size;
  else [info.width, info.height] = size;
  return info;
}

/** Why the server would refuse this file with these options, in its words; null if it would not. */
export function refusal(info, file, limits, scale, format) {
  // First: an empty file has no type to sniff, and "unsupported type" would
  // send its owner looking for the wrong problem.
  if (info.unreadable) return "The file could not be read (a folder, or removed since it was chosen)";
  if (file.size < 1) return "The file is empty";
  if (!info.type || !limits.fileTypes.includes(info.type)) {
    return "Unsupported file type. Allowed: JPEG, PNG, WEBP";
  }
  if (file.size > limits.maxUploadBytes) {
    return `File size exceeds maximum limit of ${Math.round(limits.maxUploadBytes / 1048576)}MB`;
  }
  // A header without a readable size is refused, as start-task does: the
  // worker could only fail it. These are the server's words after the file's
  // name ("File 'a.png' ('…') is not a complete PNG image: …").
  if (info.broken) return info.broken;
  if (info.refused) return info.refused;
  const { width, height } = info;
  if (width === null || height === null) return "has no readable image size";
  if (width < 1 || height < 1) return "the image header gives no size";
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

/**
 * A refusal as a sentence about the named file. The server words a header's
 * reason after the file's name ("File 'a.png' ('…') is not a complete PNG
 * image: …"), so those reasons read well only after the name, as here.
 */
export function refusalSentence(problem, name) {
  return /^(is|has) /.test(problem) ? `${name} ${problem}` : problem;
}
