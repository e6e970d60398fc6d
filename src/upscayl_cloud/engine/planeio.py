"""libvips on planes: the bridge between raw ``uint16`` files and codecs.

Importing this module configures libvips for untrusted input, once per
process:

* ``block_untrusted_set(True)`` turns off every loader libvips marks as not
  hardened for hostile files (ImageMagick, PDF, FITS, matrix...). We only call
  the JPEG, PNG and WebP loaders by name, but a blocked loader cannot be
  reached by any future code path either. ``rawload`` is among them, and is
  unblocked again: it reads our own plane files, and since it needs the
  dimensions as arguments it is never chosen for a client's file.
* ``cache_set_max(0)`` turns off libvips's operation cache. Every image the
  engine touches is read once, and a cached load would keep the file open
  after the workdir is deleted (its disk space is not freed until the cache
  evicts it) and could answer a reused path with the old file's header. This
  is process-wide: nothing in the engine benefits from the cache.

Planes are read with ``rawload`` and written with ``rawsave``, which stream
them in strips: no whole image is ever held in memory. Raw samples are in
native byte order, which is the planes' little-endian ``uint16`` on every
platform we run on (x86-64, arm64).
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pyvips

from upscayl_cloud.engine.planes import Plane

pyvips.block_untrusted_set(True)
pyvips.operation_block_set("VipsForeignLoadRaw", False)
pyvips.cache_set_max(0)

#: Kernel for exact-size resampling: lanczos3 is libvips's sharpest
#: general-purpose kernel, and what downscaling a network's output needs to
#: keep the detail the network produced.
RESIZE_KERNEL = "lanczos3"


def load_plane(plane: Plane) -> pyvips.Image:
    """A lazy libvips image over a plane file (nothing is read until used)."""
    interpretation = "rgb16" if plane.bands >= 3 else "grey16"
    return pyvips.Image.rawload(
        str(plane.path),
        plane.width,
        plane.height,
        plane.bands,
        format="ushort",
        interpretation=interpretation,
    )


def save_plane(image: pyvips.Image, path: Path) -> Plane:
    """Run ``image``'s pipeline into a new plane file at ``path``.

    ``image`` reads only our own planes, so a libvips failure is the disk's
    and comes out as an ``OSError``, as in :func:`save_atomically`."""
    try:
        return save_loaded_plane(image, path)
    except pyvips.Error as err:
        raise as_os_error(err, Path(path)) from err


def save_loaded_plane(image: pyvips.Image, path: Path) -> Plane:
    """:func:`save_plane` for a pipeline that reads a client's file: libvips's
    own error is raised, since only its words tell a truncated file (the
    client's to fix) from a failed write (ours)."""
    if image.format != "ushort":
        raise ValueError(f"planes hold ushort samples, not {image.format}")
    image.rawsave(str(path))
    return Plane(Path(path), image.width, image.height, image.bands)


def new_plane_path(workdir: Path, stem: str) -> Path:
    """A fresh, unique file name in ``workdir``, so that decoding several
    images (or one image twice) into the same workdir never collides."""
    fd, name = tempfile.mkstemp(prefix=f"{stem}-", suffix=".u16", dir=workdir)
    os.close(fd)
    return Path(name)


def resize(plane: Plane, width: int, height: int, destination: Path) -> Plane:
    """Resample ``plane`` to exactly ``width x height`` into a new plane.

    Used where a network pass overshoots the requested scale (a 4x network for
    a 2x request, two 3x passes for 8x). Horizontal and vertical factors are
    set separately so the target size is reached exactly, not up to rounding;
    the size is checked anyway, since a plane of the wrong size would be
    misread by every later step."""
    if width < 1 or height < 1:
        raise ValueError(f"cannot resize to {width}x{height}")
    source = load_plane(plane)
    if (width, height) == (plane.width, plane.height):
        return save_plane(source, destination)
    hscale = width / plane.width
    vscale = height / plane.height
    # In float: libvips's integer path uses fixed-point weights that shift
    # flat 16-bit areas by up to ~10/65535. Casting back clips lanczos's
    # overshoot to 0..65535; +0.5 rounds, since the cast truncates.
    resized = (
        source.cast("float")
        .resize(hscale, vscale=vscale, kernel=RESIZE_KERNEL)
        .linear(1.0, 0.5)
        .cast("ushort")
    )
    if (resized.width, resized.height) != (width, height):
        raise RuntimeError(
            f"libvips resized {plane.width}x{plane.height} to {resized.width}x{resized.height}, "
            f"not {width}x{height}"
        )
    return save_plane(resized, destination)


@contextlib.contextmanager
def atomic_destination(destination: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``destination``; move it into place on
    success, delete it on failure.

    A crash or an encoder error therefore never leaves a half-written file
    where a reader (the uploader, a client following a link) expects a whole
    one. The temporary file is in the same folder so the rename is atomic, and
    it is synced first so that a power loss cannot leave a renamed but empty
    file either."""
    destination = Path(destination)
    # Some of the name, not all: a legal 245-byte name made a temporary name
    # over the file system's 255 bytes, and failed after all the work.
    fd, name = tempfile.mkstemp(
        prefix=f".{destination.name[:40]}.", suffix=".part", dir=destination.parent
    )
    os.close(fd)
    temporary = Path(name)
    try:
        yield temporary
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        # mkstemp creates 0600; a result is an ordinary file for whoever
        # serves or reads it next.
        os.chmod(temporary, 0o644)
        os.replace(temporary, destination)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def save_atomically(save: Callable[[str], None], destination: Path) -> int:
    """Call ``save(path)`` on a temporary path, publish it at ``destination``
    and return its size in bytes.

    A libvips failure comes out as an ``OSError``: what ``save`` reads and
    writes here is ours (our planes, our result file), never the client's
    bytes, so its failure is the disk's. Callers then meet one kind of I/O
    failure, with the kernel's number where libvips's words give it, so a
    full disk is told apart by ``errno`` wherever the engine is used (the
    worker requeues on it; local ``upscale`` names it in one line)."""
    try:
        with atomic_destination(destination) as temporary:
            save(str(temporary))
            size = temporary.stat().st_size
    except pyvips.Error as err:
        raise as_os_error(err, destination) from err
    return size


#: The failures libvips reports in the system's words, not as a number.
_WORDED_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def as_os_error(err: pyvips.Error, destination: Path) -> OSError:
    """``err`` as the ``OSError`` it stands for, in one line: ``ENOSPC`` or
    ``EDQUOT`` where libvips's words say so ("system error: No space left on
    device", after a line naming the file), ``EIO`` with its first line
    otherwise."""
    text = f"{err.message} {err.detail}".lower()
    for code in _WORDED_ERRNOS:
        if os.strerror(code).lower() in text:
            return OSError(code, f"could not write {destination.name}: {os.strerror(code)}")
    detail = [line.strip() for line in str(err.detail or "").splitlines() if line.strip()]
    said = detail[0] if detail else str(err.message or "libvips failed").strip()
    return OSError(errno.EIO, f"could not write {destination.name}: {said}")
