"""Raw image planes on disk: the engine's working memory.

Every stage of the pipeline (decode, each network pass, resize, encode) reads
and writes *planes*: headerless files of interleaved ``uint16`` samples, row
major, ``height x width x bands``, where 0..65535 stands for 0.0..1.0. Keeping
the whole image on disk and only tiles in RAM is what keeps memory flat
however large the image is; 16 bits keep a chain of passes from losing
precision, and let 16-bit sources go through without being truncated.

Reads and writes use ``pread``/``pwrite`` rather than ``mmap`` on purpose:
mapped file pages count towards the process's resident set and would make
memory grow with the image. libvips reads the same files with ``rawload``,
which does map the whole file: while it decodes, resizes or encodes, the
resident size grows by the plane's size in *clean, file-backed* pages that
the kernel can drop at any time, while anonymous memory stays flat.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DTYPE = np.dtype("<u2")
MAX_VALUE = 65535


@dataclass(frozen=True)
class Plane:
    """A ``width x height x bands`` image stored as raw ``uint16`` at ``path``."""

    path: Path
    width: int
    height: int
    bands: int

    @property
    def row_bytes(self) -> int:
        return self.width * self.bands * DTYPE.itemsize

    @property
    def nbytes(self) -> int:
        return self.row_bytes * self.height

    @classmethod
    def create(cls, path: Path, width: int, height: int, bands: int) -> Plane:
        """Allocate a plane (a sparse file of the right size) for writing."""
        plane = cls(Path(path), width, height, bands)
        with open(plane.path, "wb") as handle:
            handle.truncate(plane.nbytes)
        return plane

    @classmethod
    def from_array(cls, path: Path, array: np.ndarray) -> Plane:
        """Write a whole ``H x W x C`` array (any float in 0..1 or uint16)."""
        data = to_samples(array) if array.dtype != DTYPE else array
        plane = cls.create(path, data.shape[1], data.shape[0], data.shape[2])
        plane.write(0, 0, data)
        return plane

    def read(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """Read the rectangle ``[x0, x1) x [y0, y1)`` as an ``h x w x bands`` array."""
        if not (0 <= x0 < x1 <= self.width and 0 <= y0 < y1 <= self.height):
            raise ValueError(f"region {(x0, y0, x1, y1)} outside {self.width}x{self.height}")
        width = x1 - x0
        out = np.empty((y1 - y0, width, self.bands), dtype=DTYPE)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            if width == self.width:
                _pread_into(fd, out, y0 * self.row_bytes)
            else:
                col_offset = x0 * self.bands * DTYPE.itemsize
                for row in range(y1 - y0):
                    _pread_into(fd, out[row], (y0 + row) * self.row_bytes + col_offset)
        finally:
            os.close(fd)
        return out

    def read_all(self) -> np.ndarray:
        return self.read(0, 0, self.width, self.height)

    def write(self, x0: int, y0: int, data: np.ndarray) -> None:
        """Write an ``h x w x bands`` uint16 array with its top-left at ``(x0, y0)``."""
        h, w, bands = data.shape
        if bands != self.bands or x0 < 0 or y0 < 0 or x0 + w > self.width or y0 + h > self.height:
            raise ValueError(f"{w}x{h}x{bands} at {(x0, y0)} does not fit {self}")
        data = np.ascontiguousarray(data, dtype=DTYPE)
        fd = os.open(self.path, os.O_WRONLY)
        try:
            if w == self.width:
                _pwrite_all(fd, data, y0 * self.row_bytes)
            else:
                col_offset = x0 * self.bands * DTYPE.itemsize
                for row in range(h):
                    _pwrite_all(fd, data[row], (y0 + row) * self.row_bytes + col_offset)
        finally:
            os.close(fd)


def to_samples(values: np.ndarray) -> np.ndarray:
    """Float image in 0..1 (values outside are clipped) -> uint16 samples."""
    return (np.clip(values, 0.0, 1.0) * MAX_VALUE + 0.5).astype(DTYPE)


#: Bytes of floats per band of ``chw_to_samples``: a band's temporaries stay in cache.
BAND_BYTES = 1 << 20


def chw_to_samples(chw: np.ndarray) -> np.ndarray:
    """A network's ``c x h x w`` floats -> ``h x w x c`` uint16 samples, the
    same values as ``to_samples(chw.transpose(1, 2, 0))``.

    Done whole, the clip, the scaling and the strided transpose each walk a
    tile far larger than the CPU's caches: 0.31-0.38 s for one 4096² output,
    most of a GPU pass of the compact networks (bench/README.md, "Tile
    output conversion"). A few rows at a time, the temporaries stay in cache.
    """
    channels, height, width = chw.shape
    out = np.empty((height, width, channels), dtype=DTYPE)
    rows = max(1, BAND_BYTES // max(1, channels * width * 4))
    for y in range(0, height, rows):
        band = np.clip(chw[:, y : y + rows], 0.0, 1.0)
        band *= MAX_VALUE
        band += 0.5
        out[y : y + rows] = band.transpose(1, 2, 0)  # the cast truncates, as astype does
    return out


def to_float(samples: np.ndarray) -> np.ndarray:
    """uint16 samples -> float32 in 0..1."""
    return samples.astype(np.float32) * np.float32(1.0 / MAX_VALUE)


def _pread_into(fd: int, out: np.ndarray, offset: int) -> None:
    view = memoryview(out).cast("B")
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if got <= 0:
            raise OSError(f"short read from plane at offset {offset + done}")
        done += got


def _pwrite_all(fd: int, data: np.ndarray, offset: int) -> None:
    view = memoryview(np.ascontiguousarray(data)).cast("B")
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)


def extrema(plane: Plane, rows_per_read: int = 256) -> tuple[int, int]:
    """Smallest and largest sample, reading a strip of rows at a time."""
    low, high = MAX_VALUE, 0
    for y0 in range(0, plane.height, rows_per_read):
        strip = plane.read(0, y0, plane.width, min(plane.height, y0 + rows_per_read))
        low, high = min(low, int(strip.min())), max(high, int(strip.max()))
    return low, high
