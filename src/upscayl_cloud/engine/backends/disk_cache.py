"""A folder of compiled blobs that processes share: locked, checked, pruned.

OpenVINO writes one compiled blob per network and input shape and never
deletes any; with images of many sizes the folder would grow without end,
so it is pruned to a size limit.

OpenVINO checks a blob's header and size when it loads one, not its
contents: a blob of the right size whose middle was zeroed (what a crash
leaves when a file's size reached the disk and its data did not) loaded
without complaint and made a garbage image, reported as a success. So each
blob written while the folder's lock is held gets a checksum beside it
(``.<name>.sha256``), and before a compilation may load from the folder
every blob is checked against its own, once per process per version of the
file; one that differs, or has none (an older version wrote it, or a
process died between the blob and its checksum), is deleted, and OpenVINO
compiles again. Which blob a compilation loads is OpenVINO's affair (a hash
of the model and its settings), so all of them are checked rather than one
guessed: a process's first compilation reads the folder at about 1 GB/s
(4 s for a full 4 GiB), later ones only blobs that changed.

The folder is only a saving: one that cannot be used (not creatable, not
writable, its lock or a blob not deletable) is warned of once per process,
and compilations go on without it.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

log = logging.getLogger(__name__)

#: The lock file in the cache folder (never pruned: a dot file).
LOCK_NAME = ".lock"

#: What a blob's checksum file is called after it: a dot file, so pruning
#: leaves it to go with its blob.
SUM_SUFFIX = ".sha256"

#: (size, mtime, inode) of each blob found whole in this process: checked
#: again only once the file changed.
_checked: dict[Path, tuple[int, int, int]] = {}
_checked_lock = threading.Lock()

#: Folders whose trouble was logged already: a worker would otherwise warn
#: on every compilation, for as long as the folder stays unusable.
_warned: set[Path] = set()


def warn_unusable(folder: Path, exc: OSError) -> None:
    """Log, once per folder and process, that ``folder`` cannot be used."""
    with _checked_lock:
        if folder in _warned:
            return
        _warned.add(folder)
    log.warning("cache folder %s cannot be used (%s); compiling without it", folder, exc)


def prune(folder: Path, max_bytes: int) -> int:
    """Delete the oldest files until the folder holds at most ``max_bytes``;
    returns the bytes freed. Age is the later of access and modification
    time: with ``relatime`` mounts access times are coarse, so this is close
    to least recently written. A file deleted while another process reads it
    stays readable to that process (POSIX), and OpenVINO compiles again when
    a blob is missing. Dot files (the lock, checksums) are never counted; a
    checksum goes with its blob. A file that cannot be deleted is left, and
    the next one tried: the folder is only a saving."""
    entries = []
    for path in folder.iterdir():
        if path.name.startswith("."):  # the lock and checksums, not cached data
            continue
        try:
            stat = path.stat()
        except FileNotFoundError:  # removed by another process meanwhile
            continue
        if path.is_file():
            entries.append((max(stat.st_atime, stat.st_mtime), stat.st_size, path))
    total = sum(size for _, size, _ in entries)
    freed = 0
    for _, size, path in sorted(entries):
        if total - freed <= max_bytes:
            break
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:  # once per compilation: not worth a warning
            log.debug("could not prune %s: %s", path, exc)
            continue
        freed += size
        with suppress(OSError):  # else the next check deletes it
            _sum_path(path).unlink(missing_ok=True)
    return freed


@contextmanager
def compiling(folder: Path, max_bytes: int) -> Iterator[bool]:
    """Around a compilation that may use ``folder``: yields whether it may.

    Holds the folder's lock throughout: OpenVINO writes a blob in place and
    maps blobs it loads, so a process loading one while another still wrote
    it died of SIGBUS (seen with three workers starting together).
    Compilations that use the folder take turns, across threads and
    processes; inference does not wait for it. Before the compilation the
    blobs are checked; after it, those it wrote get their checksums, and the
    folder is pruned. A compilation that raises leaves what it wrote without
    a checksum: the next check deletes it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / LOCK_NAME, "a")  # noqa: SIM115 - held below
    except OSError as exc:
        warn_unusable(folder, exc)
        handle = None
    if handle is None:
        yield False
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError as exc:  # ENOLCK: a network filesystem without locks
            warn_unusable(folder, exc)
            locked = False
        else:
            locked = True
        try:
            try:
                before = _check(folder) if locked else None
            except OSError as exc:
                warn_unusable(folder, exc)
                before = None
            yield before is not None
            if before is not None:
                try:
                    _record(folder, before)
                    prune(folder, max_bytes)
                except OSError as exc:
                    warn_unusable(folder, exc)
        finally:
            if locked:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _blobs(folder: Path) -> dict[Path, tuple[int, int, int]]:
    """Every cached blob (the folder's plain files but dot files) and its
    version: size, modification time and inode."""
    found = {}
    for path in folder.iterdir():
        if path.name.startswith("."):
            continue
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        if path.is_file():
            found[path] = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
    return found


def _sum_path(blob: Path) -> Path:
    return blob.with_name(f".{blob.name}{SUM_SUFFIX}")


def _digest(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _check(folder: Path) -> dict[Path, tuple[int, int, int]]:
    """Delete the blobs that differ from their checksum or have none, and
    checksums whose blob is gone; the blobs left, with their versions."""
    blobs = _blobs(folder)
    for path, version in list(blobs.items()):
        with _checked_lock:
            if _checked.get(path) == version:
                continue
        try:
            expected = _sum_path(path).read_text(errors="replace").strip()
        except FileNotFoundError:
            expected = None
        try:
            whole = expected is not None and expected == _digest(path)
        except FileNotFoundError:  # deleted meanwhile, by hand
            del blobs[path]
            continue
        if not whole:
            path.unlink(missing_ok=True)  # one that cannot go makes the folder unusable
            _sum_path(path).unlink(missing_ok=True)
            reason = "it had no checksum" if expected is None else "its checksum differed"
            log.warning("deleted cached blob %s (%s): it is compiled again", path, reason)
            del blobs[path]
            continue
        with _checked_lock:
            _checked[path] = version
    for path in folder.glob(f".*{SUM_SUFFIX}"):
        if not (folder / path.name[1 : -len(SUM_SUFFIX)]).exists():
            path.unlink(missing_ok=True)
    for path in folder.glob(f".*{SUM_SUFFIX}.*.tmp"):  # left by a process that died
        path.unlink(missing_ok=True)
    return blobs


def _record(folder: Path, before: dict[Path, tuple[int, int, int]]) -> None:
    """Write the checksum of each blob that is new or changed since
    ``before``: the lock was held, so this compilation wrote it. Atomic (a
    temporary dot file renamed): a check never reads half a checksum."""
    for path, version in _blobs(folder).items():
        if before.get(path) == version:
            continue
        digest = _digest(path)
        target = _sum_path(path)
        temporary = folder / f"{target.name}.{secrets.token_hex(4)}.tmp"
        try:
            with open(temporary, "x") as handle:
                handle.write(digest + "\n")
            os.replace(temporary, target)
        except OSError:
            temporary.unlink(missing_ok=True)
            raise
        with _checked_lock:
            _checked[path] = version
