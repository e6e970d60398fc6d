"""Where downloaded results go: the server suggests a name, the client picks the place.

``processedFileName`` comes from the server, and a buggy or hostile server
could answer ``../../.bashrc``, ``/etc/cron.d/job`` or ``C:\\x``. If that
string were joined to the output folder as is, the server would choose where
on the caller's disk a file is written. So a server-supplied name is only ever
reduced to one plain file name (:func:`safe_file_name`), the folder is always
ours, and the joined path is checked to stay in that folder (:func:`inside`).

Two inputs can also ask for the same result name (``a.jpg`` and ``a.png``
both become ``a_upscayl_2x_<model>.png``). :class:`OutputNames` hands out
each destination once per run, so the second becomes ``... (2).png`` instead
of silently replacing the first. Across runs, a file already at a name is
replaced only when the folder's :data:`MANIFEST_NAME` says it is the result
of the same source: ``trip2023/IMG_0001.jpg`` and ``trip2024/IMG_0001.jpg``
upscaled one after the other into one folder both ask for
``IMG_0001_upscayl_...``, and the second run used to replace the first's.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from upscayl_cloud.client.errors import UpscaylError

#: Longest name we accept from a server, in UTF-8 bytes: most filesystems stop at
#: 255, and ``" (NN)"`` plus the ``_thumb.webp`` of a thumbnail must still fit.
MAX_NAME_BYTES = 200

#: Unicode categories dropped from names: control characters (NUL, CR, LF, ESC,
#: C1), format characters (right-to-left overrides that disguise an extension),
#: and line/paragraph separators.
_DROPPED = frozenset({"Cc", "Cf", "Zl", "Zp"})

#: Characters no Windows file name may hold, each written as ``_``.
_WINDOWS_REFUSES = str.maketrans(dict.fromkeys(':<>"|?*', "_"))


def safe_file_name(name: object) -> str | None:
    """``name`` reduced to one harmless file name, or None if nothing usable is left.

    Only the last component after any ``/`` or ``\\`` is kept (both, because a
    name is checked here, not by the OS it was meant for), control and format
    characters are dropped, ``:`` (a Windows drive or stream) and the other
    characters Windows refuses (``<>"|?*``) become ``_``, leading dots
    (``..``, hidden files such as ``.bashrc``) and trailing dots and spaces
    (which Windows drops) are stripped.
    """
    if not isinstance(name, str):
        return None
    last = re.split(r"[/\\]", name)[-1]
    kept = "".join(c for c in last if unicodedata.category(c) not in _DROPPED)
    cleaned = kept.translate(_WINDOWS_REFUSES).strip().lstrip(".").rstrip(". ")
    try:
        size = len(cleaned.encode("utf-8"))  # lone surrogates from JSON cannot be a file name
    except UnicodeEncodeError:
        return None
    if not cleaned or size > MAX_NAME_BYTES:
        return None
    return cleaned


#: What a server's name for a result may end in: the formats it delivers.
RESULT_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp"})


def result_file_name(name: object) -> str | None:
    """A server's ``processedFileName`` as :func:`safe_file_name` leaves it,
    if it names an image; else None. A result replaces its own earlier
    result of that name in the output folder (reruns refresh them), so a
    server may only ever name an image there, never ``notes.txt`` or a
    dotfile stripped to ``bashrc``."""
    cleaned = safe_file_name(name)
    if cleaned is None or Path(cleaned).suffix.lower() not in RESULT_SUFFIXES:
        return None
    return cleaned


#: Upscayl's result names (``<stem>_upscayl_<scale>x_<model>[ (n)].<ext>``):
#: a folder upscaled in place holds the last run's results.
RESULT_NAME = re.compile(r".+_upscayl_\d+x_[^/]+?( \(\d+\))?\.(png|jpe?g|webp)", re.IGNORECASE)


def local_name(source: Path, scale: object, model: object, fmt: object) -> str:
    """Upscayl's naming (``<stem>_upscayl_<scale>x_<model>.<ext>``, as the server
    and ``upscayl-cloud upscale`` use), built from the local input and the options
    asked for: the name used when the server's cannot be used. A stem too long
    for :data:`MAX_NAME_BYTES` is shortened, never the rest: a result without
    its extension would be taken for an input by the next run."""
    built = safe_file_name(f"{source.stem}_upscayl_{scale}x_{model}.{fmt}")
    if built is not None:
        return built
    ending = (
        safe_file_name(f"_upscayl_{scale}x_{model}.{fmt}")
        or safe_file_name(f"_upscayl.{fmt}")
        or "_upscayl.jpg"
    )
    room = max(0, MAX_NAME_BYTES - len(ending.encode("utf-8")))
    # Cut before it is cleaned: a stem over MAX_NAME_BYTES is no safe name
    # by itself, and every such file became "image_upscayl...".
    cut = source.stem.encode("utf-8", errors="ignore")[:room].decode("utf-8", errors="ignore")
    return safe_file_name((safe_file_name(cut) or "image") + ending) or "image_upscayl.jpg"


def inside(folder: Path, name: str) -> Path:
    """``folder / name``, verified to be a file directly in ``folder``.

    The folder is resolved; the file itself is not, on purpose: a symlink
    already sitting at that name is replaced by the download's rename, never
    followed.
    """
    base = folder.resolve()
    joined = Path(os.path.normpath(base / name))
    if not name or joined.parent != base or joined.name != name:
        raise UpscaylError("UNSAFE_NAME", f"{name!r} would be written outside {folder}")
    return folder / name


#: Kept in each folder results are written to: which source each result
#: there was written for (``{"version": 1, "results": {name: source}}``, the
#: source's resolved path), so that a later run replaces its own earlier
#: results and nothing else. Hidden, so no run takes it for an input.
MANIFEST_NAME = ".upscayl-results.json"
_MANIFEST_VERSION = 1


def read_manifest(folder: Path) -> dict[str, str]:
    """The results recorded in ``folder`` (name -> source); empty when there
    is no manifest or it cannot be read: then nothing counts as a result of
    ours, and results take `` (n)`` names rather than replace a file."""
    try:
        body = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
        results = body["results"] if body.get("version") == _MANIFEST_VERSION else {}
        return {str(k): str(v) for k, v in results.items()}
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return {}


def write_manifest(folder: Path, written: dict[str, str]) -> dict[str, str]:
    """Add ``written`` (name -> source) to ``folder``'s manifest, atomically
    (a temporary file renamed over it), and return the whole of it. What is
    on disk now is merged in, so that two runs writing into one folder lose
    at most an entry (a later run then adds a `` (n)`` copy rather than
    replace a result); names no longer there are dropped. A folder that
    cannot take it only costs that."""
    merged = {**read_manifest(folder), **written}
    kept = {name: src for name, src in sorted(merged.items()) if (folder / name).is_file()}
    temp = folder / f"{MANIFEST_NAME}.{secrets.token_hex(4)}.tmp"
    try:
        temp.write_text(json.dumps({"version": _MANIFEST_VERSION, "results": kept}, indent=1))
        os.replace(temp, folder / MANIFEST_NAME)
    except OSError:
        temp.unlink(missing_ok=True)
    return kept


class OutputNames:
    """The destinations of one ``upscale()`` run, each handed out once.

    Paths are compared resolved and case-folded, so two names that are the
    same file on a case-insensitive filesystem (macOS, Windows) count as one.
    The run's own inputs are reserved up front: a result is never written over
    a file that the run is reading. A file already at a name is replaced only
    when it is an earlier result of the same source (recorded in the folder's
    :data:`MANIFEST_NAME` by :meth:`written` and :meth:`save`), so running the
    same command again refreshes its results in place. Any other file is
    never replaced, whatever name a server suggests (a server answering
    ``family.jpg`` would have replaced the photo of that name beside the
    input), nor is another input's result (``trip2023/IMG_0001.jpg``'s,
    when ``trip2024/IMG_0001.jpg`` is upscaled into the same folder): the
    result gets the next free `` (n)`` name.
    """

    def __init__(self, inputs: Iterable[Path] = ()) -> None:
        self._taken: set[str] = {self._key(path.parent, path.name) for path in inputs}
        #: Each output folder's manifest as read at its first claim, by folder.
        self._recorded: dict[Path, dict[str, str]] = {}
        #: The results this run wrote and has not saved yet, by folder.
        self._unsaved: dict[Path, dict[str, str]] = {}

    @staticmethod
    def _key(folder: Path, name: str) -> str:
        return os.path.normcase(str(folder.resolve() / name)).casefold()

    def _earlier_result_of(self, dest: Path, source: Path) -> bool:
        """Whether the file at ``dest`` is a result written for ``source``:
        a plain file (no link, no folder), named as a result, and recorded so."""
        if dest.is_symlink() or not dest.is_file() or not RESULT_NAME.fullmatch(dest.name):
            return False
        folder = dest.parent
        if folder not in self._recorded:
            self._recorded[folder] = read_manifest(folder)
        return self._recorded[folder].get(dest.name) == str(source.resolve())

    def claim(self, folder: Path, name: str, source: Path) -> Path:
        """``folder / name``, or ``<stem> (2)<ext>``, ``(3)``, ... when this run
        already uses that path or something is there that is not an earlier
        result of ``source`` (see :meth:`_earlier_result_of`); always a file
        directly inside ``folder``."""
        stem, ext = os.path.splitext(name)
        number = 1
        while True:
            candidate = name if number == 1 else f"{stem} ({number}){ext}"
            dest = inside(folder, candidate)
            key = self._key(folder, candidate)
            # A folder (or anything but a file) at the name cannot be replaced by
            # a rename: found only after the server had charged, it lost the result.
            blocked = (dest.exists() or dest.is_symlink()) and not self._earlier_result_of(
                dest, source
            )
            if key not in self._taken and not blocked:
                self._taken.add(key)
                return dest
            number += 1

    def written(self, dest: Path, source: Path) -> None:
        """Note that ``dest`` now holds ``source``'s result (see :meth:`save`)."""
        self._unsaved.setdefault(dest.parent, {})[dest.name] = str(source.resolve())

    def save(self) -> None:
        """Record the results noted since the last save in their folders'
        manifests: one write per folder, not one per file."""
        for folder, written in self._unsaved.items():
            # The whole manifest, not this run's part: a later claim here
            # asks about earlier runs' results too.
            self._recorded[folder] = write_manifest(folder, written)
        self._unsaved.clear()


def output_folder_problem(folder: Path) -> str | None:
    """Why results cannot be written below ``folder``, or None when they can.

    Checked before anything is uploaded: ``-o me.jpg`` naming an existing file
    otherwise failed only at the first download, after the server had
    processed (and charged for) every image."""
    for place in (folder, *folder.parents):
        if place.exists() or place.is_symlink():
            if place.is_dir():
                return None
            what = "the output folder" if place == folder else f"{place}, in its path,"
            return f"{folder}: {what} is a file, not a folder"
    return None


def unwritable_folder_problem(folder: Path) -> str | None:
    """Why no result can be written in ``folder``, or None when one can.

    Found out the way a download would: by creating a new hidden file in it
    (or, if it does not exist yet, in the nearest folder above it, where it
    would be created) and removing it again. Mode bits say nothing of a
    read-only file system, ACLs or root. Checked before anything is
    uploaded: inputs on a read-only disk upscaled in place used to fail
    only at their downloads, after the server had charged for them. A
    ``folder`` that is, or lies below, a file is
    :func:`output_folder_problem`'s to report: None here."""
    place = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if place is None or not place.is_dir():
        return None
    probe = place / f".upscayl-probe.{secrets.token_hex(4)}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as exc:
        where = "" if place == folder else f" ({place}, where it would be made, takes no file)"
        return f"{folder}: results cannot be written there{where}: {exc.strerror or exc}"
    # Made but not removable (another's sticky folder): it takes files, as asked.
    with contextlib.suppress(OSError):
        probe.unlink()
    return None


def partial_file(dest: Path) -> Path:
    """A new, empty, hidden file beside ``dest`` for its bytes in flight.

    Created exclusively (``O_EXCL``) under a random name, so two downloads to the
    same ``dest`` (two runs into one folder) never write into one partial file;
    whichever renames last wins, and each rename is whole. Mode 0666 less the
    umask, like any file the user creates (``mkstemp`` would give 0600).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    while True:
        partial = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.part")
        try:
            os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return partial
