"""Finding the images to send: walk folders, recognise images by their bytes.

The server sniffs types from magic bytes and refuses a mismatch, so we do the
same before uploading anything: a ``.png`` that is really a text file is
skipped here with a reason instead of costing an upload and a failed batch.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from upscayl_cloud.client.naming import RESULT_NAME

#: State files of interrupted uploads live next to their sources; never send them.
STATE_SUFFIX = ".upscayl-upload.json"


_LINKED_FOLDER = "a link to a folder, not followed (name it to include its files)"

#: Why a link that leads back to itself (``self -> self``, ``a -> b -> a``) is skipped.
LINK_LOOP = "a link loop"


def sniff(head: bytes) -> str | None:
    """The MIME type the server will accept this file as, or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


@dataclass(frozen=True)
class Source:
    """An image to upscale; ``relative`` keeps its place below a folder argument."""

    path: Path
    relative: Path
    mime_type: str
    size: int


@dataclass(frozen=True)
class Skipped:
    path: Path
    reason: str


@dataclass(frozen=True)
class EarlierResult(Skipped):
    """A result of an earlier run, found in a folder: skipped, and free to be
    written over by this run's result of the same name."""

    reason: str = "an earlier result (name the file itself to upscale it again)"


def inspect(path: Path, relative: Path) -> Source | Skipped:
    """Open the file and read its head: unreadable, empty and non-images are
    skipped, and so is what is no regular file (opening a named pipe waits
    for a writer: the run hung on a FIFO in a folder)."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            return Skipped(path, "not a regular file (a pipe, socket or device)")
        with path.open("rb") as handle:
            head = handle.read(16)
        size = path.stat().st_size
    except OSError as exc:
        return Skipped(path, f"unreadable: {exc.strerror or exc}")
    if size == 0:
        return Skipped(path, "empty file")
    mime = sniff(head)
    if mime is None:
        return Skipped(path, "not a JPEG, PNG or WebP image")
    return Source(path, relative, mime, size)


@dataclass(frozen=True)
class Duplicate(Skipped):
    """A second path (a link) to a file already taken: skipped, never a failure,
    and reported so that a linked file or folder does not silently vanish."""


def collect(paths: Iterable[Path], recursive: bool = False) -> list[Source | Skipped]:
    """Expand arguments into files in a stable order; folders only with ``recursive``
    (their direct files are always taken), hidden files, upload state and
    earlier results skipped. Without that last rule, running a folder again
    upscaled (and paid for) the previous run's results, and the originals' new
    results took `` (3)`` names because their own belonged to inputs."""
    found: list[Source | Skipped] = []
    seen: dict[Path, Path] = {}
    for arg in paths:
        if arg.is_dir():
            for path, unlisted in _walk(arg, recursive):
                if unlisted is not None:
                    found.append(Skipped(path, f"a folder that cannot be listed: {unlisted}"))
                    continue
                if path.is_dir():
                    if recursive and path.is_symlink():  # the walk does not follow links
                        found.append(Skipped(path, _LINKED_FOLDER))
                    continue
                if RESULT_NAME.fullmatch(path.name):
                    found.append(EarlierResult(path))
                    continue
                _add(found, seen, path, path.relative_to(arg))
        elif arg.exists() or arg.is_symlink():
            _add(found, seen, arg, Path(arg.name))
        else:
            found.append(Skipped(arg, "no such file or folder"))
    # A result named on its own beside its folder is taken, not also skipped.
    taken = {_resolved(item.path) for item in found if isinstance(item, Source)}
    return [
        item
        for item in found
        if not (isinstance(item, EarlierResult) and _resolved(item.path) in taken)
    ]


def _resolved(path: Path) -> Path | str:
    """Where ``path`` leads, links followed; or, where they lead nowhere,
    why. ``Path.resolve`` raises RuntimeError on a link loop (Python 3.11;
    later versions an OSError): one such link in a folder, or named, ended
    the whole collection, for ``upscale`` and ``client upscale`` alike,
    before any file was done."""
    try:
        return path.resolve()
    except RuntimeError:
        return LINK_LOOP
    except OSError as exc:
        return LINK_LOOP if exc.errno == errno.ELOOP else f"unreadable: {exc.strerror or exc}"


def _walk(folder: Path, recursive: bool) -> list[tuple[Path, str | None]]:
    """What ``folder`` holds (and, with ``recursive``, its subfolders, but not
    what links to folders point at), sorted as paths sort, hidden names left
    out; each with None, or, for a folder that cannot be listed (``folder``
    itself included), why. ``Path.glob`` left such a folder out without a
    word: a subfolder without read permission simply vanished from the run.
    """
    listed: list[tuple[Path, str | None]] = []
    pending = [folder]
    while pending:
        current = pending.pop()
        try:
            with os.scandir(current) as entries:
                inside = [(Path(e.path), e.is_dir(follow_symlinks=False)) for e in entries]
        except OSError as exc:
            listed.append((current, exc.strerror or str(exc)))
            continue
        for path, is_folder in inside:
            if path.name.startswith("."):
                continue
            listed.append((path, None))
            if recursive and is_folder:
                pending.append(path)
    return sorted(listed, key=lambda item: item[0].parts)


def _add(found: list[Source | Skipped], seen: dict[Path, Path], path: Path, relative: Path) -> None:
    """Each file once: a later path to the same file through a link is skipped
    with a reason; the same path named twice, or twice spelt differently
    (``pics`` and ``./pics/../pics``), is simply taken once."""
    if path.name.endswith(STATE_SUFFIX):
        return
    key = _resolved(path)
    if isinstance(key, str):
        found.append(Skipped(path, key))
        return
    first = seen.get(key)
    if first is None:
        seen[key] = path
        found.append(inspect(path, relative))
    elif _spelling(first) != _spelling(path):
        found.append(Duplicate(path, f"the same file as {first} (a link)"))


def _spelling(path: Path) -> str:
    """The path with ``.`` and ``..`` taken away without following links: two
    paths to one file differ here only when one of them goes through a link."""
    return os.path.normpath(path.absolute())
