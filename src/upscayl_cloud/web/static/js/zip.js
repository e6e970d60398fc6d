// A store-only ZIP writer (no compression: the images are compressed
// already), so "download all" needs no library and no CDN. Writes the local
// headers, the central directory and its end record of PKWARE's APPNOTE;
// names are flagged UTF-8. No ZIP64: a batch over 4 GB is refused.

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

export function crc32(bytes) {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function dosTime(date) {
  const time = (date.getHours() << 11) | (date.getMinutes() << 5) | (date.getSeconds() >> 1);
  const day = ((date.getFullYear() - 1980) << 9) | ((date.getMonth() + 1) << 5) | date.getDate();
  return [time, day];
}

/**
 * Each name once, ignoring case (as Windows and macOS extract them): a
 * repeated one gets " (2)", " (3)", ... before its extension, skipping any
 * taken already ("a.png, a.png, a (2).png" gave two "a (2).png").
 */
export function uniqueNames(names) {
  const taken = new Set();
  return names.map((name) => {
    const dot = name.lastIndexOf(".");
    let candidate = name;
    for (let n = 2; taken.has(candidate.toLowerCase()); n++) {
      candidate = dot > 0 ? `${name.slice(0, dot)} (${n})${name.slice(dot)}` : `${name} (${n})`;
    }
    taken.add(candidate.toLowerCase());
    return candidate;
  });
}

/**
 * The most a ZIP made here may hold: every file is held in memory until
 * the archive is offered (a batch of large PNGs could crash the tab).
 */
export const ZIP_MAX_BYTES = 1024 ** 3;

/** entries: [{name, bytes: Uint8Array}] -> Blob of a ZIP archive. */
export function zipStore(entries, date = new Date()) {
  const encoder = new TextEncoder();
  const [time, day] = dosTime(date);
  const names = uniqueNames(entries.map((e) => e.name));
  const parts = [];
  const central = [];
  let offset = 0;
  entries.forEach((entry, i) => {
    const name = encoder.encode(names[i]);
    const size = entry.bytes.length;
    const crc = crc32(entry.bytes);
    const local = new DataView(new ArrayBuffer(30));
    local.setUint32(0, 0x04034b50, true);
    local.setUint16(4, 20, true); // version needed: 2.0
    local.setUint16(6, 0x0800, true); // UTF-8 names
    local.setUint16(8, 0, true); // stored
    local.setUint16(10, time, true);
    local.setUint16(12, day, true);
    local.setUint32(14, crc, true);
    local.setUint32(18, size, true);
    local.setUint32(22, size, true);
    local.setUint16(26, name.length, true);
    local.setUint16(28, 0, true);
    parts.push(local, name, entry.bytes);

    const dir = new DataView(new ArrayBuffer(46));
    dir.setUint32(0, 0x02014b50, true);
    dir.setUint16(4, 20, true); // made by
    dir.setUint16(6, 20, true); // needed
    dir.setUint16(8, 0x0800, true);
    dir.setUint16(10, 0, true);
    dir.setUint16(12, time, true);
    dir.setUint16(14, day, true);
    dir.setUint32(16, crc, true);
    dir.setUint32(20, size, true);
    dir.setUint32(24, size, true);
    dir.setUint16(28, name.length, true);
    // extra, comment, disk, internal and external attributes: all zero
    dir.setUint32(42, offset, true);
    central.push(dir, name);
    offset += 30 + name.length + size;
    if (offset > 0xffffffff) throw new Error("The files are too large for one ZIP (4 GB)");
  });
  const centralSize = central.reduce((sum, part) => sum + part.byteLength, 0);
  const end = new DataView(new ArrayBuffer(22));
  end.setUint32(0, 0x06054b50, true);
  end.setUint16(8, entries.length, true);
  end.setUint16(10, entries.length, true);
  end.setUint32(12, centralSize, true);
  end.setUint32(16, offset, true);
  return new Blob([...parts, ...central, end], { type: "application/zip" });
}

/**
 * Fetch each {name, url, size} and offer them as one ZIP download called
 * zipName; refused before any download when the sizes known add up to more
 * than ZIP_MAX_BYTES.
 */
export async function downloadAsZip(files, zipName) {
  const total = files.reduce((sum, file) => sum + (file.size || 0), 0);
  if (total > ZIP_MAX_BYTES) {
    const err = new Error(
      `These results add up to ${(total / 1024 ** 3).toFixed(1)} GB, more than a ZIP made in the browser can hold (1 GB): download them one by one.`,
    );
    err.code = "ZIP_TOO_LARGE";
    throw err;
  }
  const entries = [];
  for (const file of files) {
    const response = await fetch(file.url);
    if (!response.ok) {
      const err = new Error(`${file.name}: download failed (${response.status})`);
      err.code = response.status === 410 ? "GONE" : "HTTP_" + response.status;
      throw err;
    }
    entries.push({ name: file.name, bytes: new Uint8Array(await response.arrayBuffer()) });
  }
  const url = URL.createObjectURL(zipStore(entries));
  const link = Object.assign(document.createElement("a"), { href: url, download: zipName });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}
