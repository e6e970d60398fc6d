"""The face-restoration models an operator installed: ``*.onnx`` files in one folder.

By default the folder is ``$UPSCAYL_DATA_DIR/models/faces``. Listing it is
cheap (no model is opened), so the service can answer "is face enhancement
available?" on every request; models are checked once, when
``upscayl-cloud models add`` copies them in.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from upscayl_cloud.engine.faces.errors import (
    FaceEnhancementUnavailableError,
    FaceModelError,
    named_model_missing_message,
)

SUFFIX = ".onnx"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


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


def available(directory: Path | None) -> list[FaceModel]:
    """Installed models, by name; none when ``directory`` is None or absent."""
    if directory is None or not Path(directory).is_dir():
        return []
    return [
        FaceModel(path.name[: -len(SUFFIX)], path)
        for path in sorted(Path(directory).iterdir())
        if path.name.endswith(SUFFIX) and path.is_file() and not path.name.startswith(".")
    ]


def select(directory: Path | None, name: str | None = None) -> FaceModel:
    """The model to use: ``name`` if given, else the first by name.

    Raises FaceEnhancementUnavailableError when none is installed (or the
    named one is not), so a request for faces is refused, never ignored."""
    models = available(directory)
    if name:
        by_name = {model.name: model for model in models}
        found = next((by_name[s] for s in _spellings(name) if s in by_name), None)
        if found is None:
            raise FaceEnhancementUnavailableError(named_model_missing_message(name))
        return found
    if not models:
        raise FaceEnhancementUnavailableError()
    return models[0]


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

    The copy is written next to its final place and renamed, so a running
    worker never sees half a file."""
    source = Path(source)
    if not source.is_file():
        raise FaceModelError(f"{source} is not a file")
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
    restorer.validate(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".adding-", suffix=SUFFIX, dir=target.parent)
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        # mkstemp's 0600 would keep it from a worker running as another user
        # (a `sudo models add`), while `models list` called it available.
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return FaceModel(name, target)


def _uses_external_data(path: Path) -> bool:
    """Whether the ONNX file at ``path`` reads weights from files beside it.
    A file that is no ONNX model says no here: ``validate`` says what it is."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return False
    return any(uses_external_data(tensor) for tensor in model.graph.initializer)


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
