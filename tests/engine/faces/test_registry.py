"""Installing face models into a data directory, and choosing one."""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from select import select as wait_readable

import numpy as np
import pytest

from tests.engine.faces import nets
from upscayl_cloud.engine.errors import EngineError
from upscayl_cloud.engine.faces import (
    UNAVAILABLE_MESSAGE,
    FaceEnhancementUnavailableError,
    FaceModelError,
    add,
    available,
    models_dir,
    registry,
    remove,
    select,
    selected,
    unavailable_reason,
)


def test_nothing_installed_means_unavailable(tmp_path: Path) -> None:
    assert available(None) == [] and available(tmp_path / "absent") == []
    with pytest.raises(FaceEnhancementUnavailableError) as caught:
        select(tmp_path / "absent")
    error = caught.value
    assert isinstance(error, EngineError) and error.client_error
    assert error.code == "FACE_ENHANCEMENT_UNAVAILABLE"
    assert error.public_message == UNAVAILABLE_MESSAGE
    assert "upscayl-cloud models add" in error.public_message


def test_add_copies_a_valid_model_and_select_finds_it(tmp_path: Path) -> None:
    directory = models_dir(tmp_path / "data")
    source = nets.invert(tmp_path / "GFPGANv1.4.onnx")
    model = add(directory, source)
    assert model.name == "GFPGANv1.4" and model.path == directory / "GFPGANv1.4.onnx"
    assert model.path.read_bytes() == source.read_bytes()
    other = add(directory, source, name="b-second")
    assert [m.name for m in available(directory)] == ["GFPGANv1.4", "b-second"]
    assert select(directory) == model and select(directory, "b-second") == other
    with pytest.raises(FaceEnhancementUnavailableError):
        select(directory, "not-there")
    remove(directory, "b-second")
    assert available(directory) == [model]
    assert [p.name for p in directory.iterdir()] == ["GFPGANv1.4.onnx"]


def test_a_name_given_as_a_file_name_means_the_model(tmp_path: Path) -> None:
    """``--name x.onnx`` installed ``x.onnx.onnx``, which ``x.onnx`` then
    named as nothing installed."""
    directory = tmp_path / "faces"
    model = add(directory, nets.invert(tmp_path / "m.onnx"), name="restorer.onnx")
    assert model.name == "restorer" and model.path == directory / "restorer.onnx"
    assert select(directory, "restorer.onnx") == model
    remove(directory, "restorer.onnx")
    assert available(directory) == []


def test_a_model_installed_as_x_onnx_onnx_before_is_still_found(tmp_path: Path) -> None:
    """``--name x.onnx`` used to install ``x.onnx.onnx``: after the upgrade
    that made it mean ``x``, that model (listed as ``x.onnx``) must still be
    selected by either spelling, and removable."""
    directory = tmp_path / "faces"
    legacy = add(directory, nets.invert(tmp_path / "m.onnx"), name="x")
    legacy.path.rename(directory / "x.onnx.onnx")
    [model] = available(directory)
    assert model.name == "x.onnx"
    assert select(directory, "x.onnx") == model and select(directory, "x") == model
    remove(directory, "x.onnx")
    assert available(directory) == []


def test_an_installed_model_is_readable_by_every_user(tmp_path: Path) -> None:
    """mkstemp's 0600 kept it from a worker running as another user than
    the operator who installed it."""
    model = add(tmp_path / "faces", nets.invert(tmp_path / "m.onnx"))
    assert model.path.stat().st_mode & 0o777 == 0o644


def test_a_refused_model_leaves_no_folders_behind(tmp_path: Path) -> None:
    """The folders are made before the copy is checked where it will live:
    a refused file left an empty models/faces in the data folder."""
    source = tmp_path / "notes.onnx"
    source.write_bytes(b"not a model")
    data = tmp_path / "data"
    data.mkdir()
    with pytest.raises(FaceModelError):
        add(models_dir(data), source)
    assert list(data.iterdir()) == []


def test_a_model_with_weights_in_other_files_is_refused(tmp_path: Path) -> None:
    """Only the .onnx would have been copied: "installed", then unloadable."""
    import onnx

    source = nets.brighten(tmp_path / "ext.onnx", 0.1)
    model = onnx.load(str(source))
    onnx.save(
        model, str(source), save_as_external_data=True, location="ext.onnx.data",
        size_threshold=0,
    )  # fmt: skip
    assert (tmp_path / "ext.onnx.data").exists()
    with pytest.raises(FaceModelError, match="external data"):
        add(tmp_path / "faces", source)
    assert not (tmp_path / "faces").exists() or not list((tmp_path / "faces").iterdir())


def test_add_refuses_a_taken_name_unless_replacing(tmp_path: Path) -> None:
    directory = tmp_path / "faces"
    add(directory, nets.invert(tmp_path / "face.onnx"))
    brighter = nets.brighten(tmp_path / "other.onnx", 0.1)
    with pytest.raises(FaceModelError, match="installed already"):
        add(directory, brighter, name="face")
    model = add(directory, brighter, name="face", replace=True)
    assert model.path.read_bytes() == brighter.read_bytes()


@pytest.mark.parametrize("name", ["../escape", "", ".hidden", "a b", "x" * 65])
def test_add_refuses_unsafe_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(FaceModelError, match="model name"):
        add(tmp_path / "faces", nets.invert(tmp_path / "face.onnx"), name=name)
    assert available(tmp_path / "faces") == []


def test_add_refuses_a_model_outside_the_contract_and_copies_nothing(tmp_path: Path) -> None:
    directory = tmp_path / "faces"
    with pytest.raises(FaceModelError, match="1x3x512x512"):
        add(directory, nets.grey_output(tmp_path / "grey.onnx"))
    with pytest.raises(FaceModelError, match="not a file"):
        add(directory, tmp_path / "missing.onnx")
    assert available(directory) == []


def test_asking_for_availability_loads_no_inference_library(tmp_path: Path) -> None:
    """The API process checks availability on each request: it must not pay
    for OpenCV and onnxruntime to list a folder."""
    code = (
        "import sys\n"
        "from upscayl_cloud.engine import faces\n"
        f"assert faces.available({str(tmp_path)!r}) == []\n"
        "heavy = [m for m in ('cv2', 'onnxruntime') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_named_model_that_is_missing_is_named_in_the_refusal(tmp_path: Path) -> None:
    directory = models_dir(tmp_path / "data")
    add(directory, nets.invert(tmp_path / "other.onnx"))
    with pytest.raises(FaceEnhancementUnavailableError) as caught:
        select(directory, "gfpgan-1.4")
    assert "'gfpgan-1.4' is not installed" in caught.value.public_message
    assert selected(directory, "gfpgan-1.4") is None
    assert unavailable_reason(directory, "gfpgan-1.4") == caught.value.public_message
    assert selected(directory, "") == selected(directory) == available(directory)[0]
    assert unavailable_reason(directory) is None


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder every user may enter: pytest's ``tmp_path`` lies under a
    folder of root's alone, which would hide what the modes below do."""
    path = Path(tempfile.mkdtemp(prefix="faces-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def _as_service_user(call: Callable[[], object]) -> object:
    """``call()``'s result as the service's user (nobody) gets it, or the
    text of what it raised. Tests run as root here, and root reads any file
    whatever its mode; forked rather than run as a subprocess, because the
    interpreter may live where that user cannot start it. Not root, the
    files made here are the test's own user's, readable whatever their mode:
    the test cannot be made, so it is skipped."""
    if os.geteuid() != 0:
        pytest.skip("acting as another user takes root")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        # Whatever happens, the child ends here: returning into pytest, it
        # would run the rest of the session as nobody beside its parent.
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            try:
                result: object = call()
            except BaseException as exc:
                result = f"raised {type(exc).__name__}: {exc}"
            os.write(write, pickle.dumps(result))
        finally:
            os._exit(0)
    os.close(write)
    ready: list[object] = []
    try:
        with os.fdopen(read, "rb") as pipe:
            # A child stuck (a lock some thread held at the fork) must not
            # hang the run: it is killed, and the test fails.
            ready, _, _ = wait_readable([pipe], [], [], 30)
            data = pipe.read() if ready else b""
    finally:
        if not ready:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert data, "the child acting as nobody answered nothing within 30 s"
    return pickle.loads(data)


def test_an_empty_model_file_is_set_aside_and_says_why(tmp_path: Path) -> None:
    """A file copied in by hand and cut short to nothing counted as
    installed: tasks were accepted, and each failed after its whole upscale."""
    directory = tmp_path / "faces"
    directory.mkdir()
    (directory / "a-empty.onnx").write_bytes(b"")
    assert available(directory) == [] and selected(directory) is None
    assert registry.unusable(directory) == {"a-empty": "its file is empty"}
    reason = unavailable_reason(directory)
    assert reason is not None
    assert "'a-empty' cannot be used (its file is empty)" in reason
    assert "models add PATH --name a-empty --replace" in reason
    assert unavailable_reason(directory, "a-empty") == reason
    # A usable model beside it is chosen; the broken one is still named when asked for.
    good = add(directory, nets.invert(tmp_path / "b-good.onnx"))
    assert available(directory) == [good] and select(directory) == good
    with pytest.raises(FaceEnhancementUnavailableError, match="'a-empty' cannot be used"):
        select(directory, "a-empty")


def test_a_model_file_the_service_cannot_read_is_set_aside(shared_dir: Path) -> None:
    directory = shared_dir / "faces"
    add(directory, nets.invert(shared_dir / "a-private.onnx"))
    (directory / "a-private.onnx").chmod(0o600)  # root's alone
    add(directory, nets.invert(shared_dir / "b-open.onnx"))
    assert _as_service_user(lambda: [m.name for m in available(directory)]) == ["b-open"]
    assert _as_service_user(lambda: registry.unusable(directory)) == {
        "a-private": "its file cannot be read: Permission denied"
    }
    reason = _as_service_user(lambda: unavailable_reason(directory, "a-private"))
    assert isinstance(reason, str) and "'a-private' cannot be used" in reason


@pytest.mark.parametrize("closed", ["models", "faces"])
def test_a_faces_folder_the_service_cannot_read_is_unavailable_not_an_error(
    shared_dir: Path, closed: str
) -> None:
    """Made 0700 by an operator's umask, it raised PermissionError out of
    /capabilities, start-task and ``models list``."""
    directory = models_dir(shared_dir / "data")
    add(directory, nets.invert(shared_dir / "m.onnx"))
    (directory if closed == "faces" else directory.parent).chmod(0o700)
    reason = _as_service_user(lambda: unavailable_reason(directory))
    assert isinstance(reason, str), reason
    assert reason.startswith("this server's face-model folder cannot be read (Permission denied)")
    assert _as_service_user(lambda: (available(directory), selected(directory))) == ([], None)


def test_folders_add_creates_are_open_to_the_service_whatever_the_umask(tmp_path: Path) -> None:
    """``sudo models add`` under umask 077 made models/ and models/faces/
    root's alone; folders that were there keep their mode."""
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o750)
    data_dir.chmod(0o750)
    directory = models_dir(data_dir)
    source = nets.invert(tmp_path / "m.onnx")
    previous = os.umask(0o077)
    try:
        model = add(directory, source)
    finally:
        os.umask(previous)
    assert directory.stat().st_mode & 0o777 == 0o755
    assert directory.parent.stat().st_mode & 0o777 == 0o755
    assert data_dir.stat().st_mode & 0o777 == 0o750
    assert model.path.stat().st_mode & 0o777 == 0o644


def _external_constant(folder: Path) -> Path:
    """out = -x * c, ``c`` a Constant node whose value is external data:
    not an initializer, so a check of the initializers alone missed it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir()
    value = numpy_helper.from_array(np.ones((1, 3, 512, 1), np.float32), "cval")
    nodes = [
        helper.make_node("Constant", [], ["c"], value=value),
        helper.make_node("Neg", ["x"], ["n"]),
        helper.make_node("Mul", ["n", "c"], ["y"]),
    ]
    image = [helper.make_tensor_value_info(n, TensorProto.FLOAT, nets.IMAGE) for n in "xy"]
    graph = helper.make_graph(nodes, "face", image[:1], image[1:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    path = folder / "m.onnx"
    onnx.save(
        model, str(path), save_as_external_data=True, location="m.data",
        size_threshold=0, convert_attribute=True,
    )  # fmt: skip
    assert (folder / "m.data").is_file()
    return path


def test_external_data_in_a_constant_node_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "faces"
    with pytest.raises(FaceModelError, match="external data"):
        add(directory, _external_constant(tmp_path / "download"))
    assert available(directory) == []


def test_a_model_is_checked_where_it_will_live_not_beside_its_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Validated as the source, a model loaded with the files beside it and
    was installed unloadable. Stand-in: the external-data check is told to
    see nothing, as for a reference it does not know of."""
    monkeypatch.setattr(registry, "_uses_external_data", lambda path: False)
    directory = tmp_path / "faces"
    with pytest.raises(FaceModelError, match=r"^m\.onnx is not a loadable ONNX model"):
        add(directory, _external_constant(tmp_path / "download"))
    assert not directory.exists()  # nothing left: no temporary copy, no folder


def test_a_file_over_2_gib_is_refused_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loading a 3 GB file to find it was no model took 3.1 GB of memory."""

    def never(path: Path) -> bool:
        raise AssertionError(f"{path} was read")

    monkeypatch.setattr(registry, "_uses_external_data", never)
    huge = tmp_path / "huge.onnx"
    with huge.open("wb") as sparse:  # takes no disk space
        sparse.truncate(2**31)
    with pytest.raises(FaceModelError, match=r"2,147,483,648 bytes: .* at most 2 GiB"):
        add(tmp_path / "faces", huge)
    assert not (tmp_path / "faces").exists()
