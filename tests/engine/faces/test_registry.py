"""Installing face models into a data directory, and choosing one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
