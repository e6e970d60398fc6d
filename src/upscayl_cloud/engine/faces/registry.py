"""The face-restoration models an operator installed: ``*.onnx`` files in one folder.

By default the folder is ``$UPSCAYL_DATA_DIR/models/faces``. Listing it is
cheap (no model is loaded), so the service can answer "is face enhancement
available?" on every request; models are checked once, when
``upscayl-cloud models add`` copies them in. A file put there by hand is
trusted only as far as the listing can tell: an empty or unreadable one is
set aside, with the reason (``unusable``); one that does not load is caught
when a task loads it, before its image is decoded (``enhancer.load_restorer``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from upscayl_cloud.engine.faces.errors import (
    FaceEnhancementUnavailableError,
    FaceModelError,
    named_model_missing_message,
    unreadable_folder_message,
    unusable_model_message,
)

SUFFIX = ".onnx"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: Largest file ``add`` takes: protobuf caps a serialised ONNX model at
#: 2 GiB, so a larger file cannot be one (its weights would be external
#: data), and loading it only to find that out took its size in memory.
MAX_MODEL_BYTES = 2**31 - 1
#: Mode of the folders ``add`` creates: a hardened umask (027, 077) under
#: ``sudo`` made them the operator's alone, and the service, another user,
#: could no longer list the models it was told were installed.
FOLDER_MODE = 0o755


@dataclass(frozen=True)
class FaceModel:
    name: str
    path: Path

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size


def models_dir(data_dir: Path) -> Path:
    """Where face models live under a data directory."""
    return Path(data_dir) / "models" / "faces"


@dataclass(frozen=True)
class _Listing:
    """What the folder holds: usable models, the others with why not, and
    why the folder itself could not be listed (None when it could)."""

    models: list[FaceModel] = field(default_factory=list)
    unusable: dict[str, str] = field(default_factory=dict)
    problem: str | None = None


def _list(directory: Path | None) -> _Listing:
    """The folder's ``*.onnx`` files, each opened (not read) to tell a usable
    one from one the service cannot read. Never raises: every caller needs
    an answer, and the API asks on every request."""
    if directory is None:
        return _Listing()
    try:
        if not Path(directory).is_dir():
            return _Listing()
        paths = sorted(Path(directory).iterdir())
    except OSError as exc:
        return _Listing(problem=unreadable_folder_message(exc.strerror or str(exc)))
    listing = _Listing()
    for path in paths:
        if not path.name.endswith(SUFFIX) or path.name.startswith("."):
            continue
        name = path.name[: -len(SUFFIX)]
        try:
            if not path.is_file():
                continue
            if path.stat().st_size == 0:
                listing.unusable[name] = "its file is empty"
                continue
            with path.open("rb"):
                pass
        except OSError as exc:
            listing.unusable[name] = f"its file cannot be read: {exc.strerror or exc}"
            continue
        listing.models.append(FaceModel(name, path))
    return listing


def available(directory: Path | None) -> list[FaceModel]:
    """Usable installed models, by name; none when ``directory`` is None,
    absent or unreadable. Empty and unreadable files are left out
    (``unusable`` says why)."""
    return _list(directory).models


def unusable(directory: Path | None) -> dict[str, str]:
    """Installed models that cannot be used, by name, with why: for
    ``models list``, so a file copied in by hand does not just vanish."""
    return _list(directory).unusable


def select(directory: Path | None, name: str | None = None) -> FaceModel:
    """The model to use: ``name`` if given, else the first usable by name.

    Raises FaceEnhancementUnavailableError when none is installed (or the
    named one is not, or cannot be used, or the folder cannot be read), so
    a request for faces is refused, never ignored."""
    listing = _list(directory)
    if listing.problem is not None:
        raise FaceEnhancementUnavailableError(listing.problem)
    if name:
        by_name = {model.name: model for model in listing.models}
        found = next((by_name[s] for s in _spellings(name) if s in by_name), None)
        if found is not None:
            return found
        broken = next((s for s in _spellings(name) if s in listing.unusable), None)
        if broken is not None:
            raise FaceEnhancementUnavailableError(
                unusable_model_message(broken, listing.unusable[broken])
            )
        raise FaceEnhancementUnavailableError(named_model_missing_message(name))
    if listing.models:
        return listing.models[0]
    if listing.unusable:
        broken, why = next(iter(listing.unusable.items()))
        raise FaceEnhancementUnavailableError(unusable_model_message(broken, why))
    raise FaceEnhancementUnavailableError()


def selected(directory: Path | None, name: str | None = None) -> FaceModel | None:
    """``select``'s answer, or None where it would refuse.

    ``models list`` asks this, start-task and ``/capabilities`` ask
    ``unavailable_reason``, the worker calls ``select``: all of them then
    agree on whether faces can be enhanced, including when
    ``UPSCAYL_FACE_MODEL`` names a model that is not installed (otherwise
    the API would accept and charge for faces that every worker then
    refuses)."""
    try:
        return select(directory, name)
    except FaceEnhancementUnavailableError:
        return None


def unavailable_reason(directory: Path | None, name: str | None = None) -> str | None:
    """Why ``enhanceFace`` would be refused here, in the client's words; None
    when it would not."""
    try:
        select(directory, name)
    except FaceEnhancementUnavailableError as exc:
        return exc.public_message
    return None


def check_name(name: str) -> str:
    """``name`` as installed: a name given as the file's (``x.onnx``) means
    the model ``x``, not a file ``x.onnx.onnx`` that ``x.onnx`` would not
    find again."""
    name = name.removesuffix(SUFFIX)
    if not NAME_PATTERN.fullmatch(name):
        raise FaceModelError(
            f"model name {name!r} must be 1-64 letters, digits, '.', '_' or '-',"
            " starting with a letter or digit"
        )
    return name


def add(directory: Path, source: Path, name: str | None = None, replace: bool = False) -> FaceModel:
    """Validate ``source`` against the contract, then copy it in as ``name``.

    The copy is written next to its final place, validated there, and
    renamed, so a running worker never sees half a file, and a model that
    loads only beside its source's other files (ONNX external data) is
    refused rather than installed unloadable."""
    source = Path(source)
    if not source.is_file():
        raise FaceModelError(f"{source} is not a file")
    size = source.stat().st_size
    if size > MAX_MODEL_BYTES:
        raise FaceModelError(
            f"{source} is {size:,} bytes: a face model in one ONNX file is at most "
            f"2 GiB ({MAX_MODEL_BYTES:,} bytes, protobuf's limit), so this is no such model"
        )
    if name is None:
        name = source.name if source.name.endswith(SUFFIX) else source.stem
    name = check_name(name)
    target = Path(directory) / f"{name}{SUFFIX}"
    if target.exists() and not replace:
        raise FaceModelError(
            f"a face model named {name!r} is installed already; pick another --name or --replace"
        )
    # Imported here: listing models must stay cheap for the API process.
    from upscayl_cloud.engine.faces import restorer

    if _uses_external_data(source):
        raise FaceModelError(
            f"{source} keeps its weights in separate files (ONNX external data), which "
            "would not be installed with it: save it as one file (onnx.save with "
            "save_as_external_data=False)"
        )
    made = _make_folders(target.parent)
    fd, tmp = tempfile.mkstemp(prefix=".adding-", suffix=SUFFIX, dir=target.parent)
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        # The copy, not the source: it must load where it will live, without
        # whatever sat beside the source (external data in Constant nodes or
        # subgraphs that ``_uses_external_data`` does not see, say).
        restorer.validate(Path(tmp), label=source.name)
        # mkstemp's 0600 would keep it from a worker running as another user
        # (a `sudo models add`), while `models list` called it available.
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        for folder in made:  # a refused model leaves the data folder as it was
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return FaceModel(name, target)


def _make_folders(directory: Path) -> list[Path]:
    """Create ``directory`` and its missing parents as ``FOLDER_MODE``,
    whatever the umask; folders that exist keep the mode they have.
    Returns the folders made, deepest first."""
    missing = []
    while not directory.is_dir():
        missing.append(directory)
        if directory.parent == directory:
            break
        directory = directory.parent
    for folder in reversed(missing):
        folder.mkdir(exist_ok=True)
        os.chmod(folder, FOLDER_MODE)
    return missing


def _uses_external_data(path: Path) -> bool:
    """Whether the ONNX file at ``path`` reads weights from files beside it.
    A file that is no ONNX model says no here: ``validate`` says what it is."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return False
    graphs = [model.graph, *(function for function in model.functions)]
    return any(uses_external_data(tensor) for graph in graphs for tensor in _tensors(graph))


def _tensors(graph: Any) -> Iterator[Any]:
    """Every tensor an ONNX graph (or function) holds: initializers, and
    node attributes (a Constant's value), subgraphs (If, Loop) included."""
    yield from getattr(graph, "initializer", ())
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            subgraphs = [attribute.g] if attribute.HasField("g") else []
            for subgraph in [*subgraphs, *attribute.graphs]:
                yield from _tensors(subgraph)


def remove(directory: Path, name: str) -> None:
    check_name(name)
    for spelling in _spellings(name):
        target = Path(directory) / f"{spelling}{SUFFIX}"
        if target.is_file():
            target.unlink()
            return
    raise FaceModelError(f"no face model named {name!r} is installed")


def _spellings(name: str) -> tuple[str, ...]:
    """The installed names ``name`` may mean, the likeliest first: as given,
    without ``.onnx``, and with it, for a model installed as ``x.onnx.onnx``
    (listed as ``x.onnx``) by ``--name x.onnx`` before that meant ``x``."""
    bare = name.removesuffix(SUFFIX)
    return tuple(dict.fromkeys((name, bare, bare + SUFFIX)))
