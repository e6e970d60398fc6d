"""``enhanceFace`` through ``upscale_file``: refused without a model, a real
change on a face, byte-identical output without one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage import data, io, transform

from tests.engine.faces import nets
from upscayl_cloud.engine import faces
from upscayl_cloud.engine.options import EngineSettings, UpscaleRequest
from upscayl_cloud.engine.pipeline import upscale_file

MODEL = "quick-clear-4x"


def _save(path: Path, image: np.ndarray, size: tuple[int, int]) -> Path:
    small = transform.resize(image, size, anti_aliasing=True)
    io.imsave(path, (small * 255 + 0.5).astype(np.uint8), check_contrast=False)
    return path


def _settings(models: Path) -> EngineSettings:
    cpu = faces.FaceSettings(use_gpu=False, threads=1, colour_match=False)
    return EngineSettings(threads=2, use_gpu=False, face_models_dir=models, faces=cpu)


def test_refused_before_decoding_without_a_model(tmp_path: Path) -> None:
    not_an_image = tmp_path / "junk.png"
    not_an_image.write_bytes(b"not an image")
    request = UpscaleRequest(MODEL, 2, "png", enhance_face=True)
    with pytest.raises(faces.FaceEnhancementUnavailableError) as caught:
        upscale_file(not_an_image, tmp_path / "out.png", request, settings=_settings(tmp_path))
    assert caught.value.code == "FACE_ENHANCEMENT_UNAVAILABLE"


def test_faces_change_and_faceless_images_do_not(tmp_path: Path) -> None:
    models = tmp_path / "faces"
    faces.add(models, nets.invert(tmp_path / "invert.onnx"), "invert")
    settings = _settings(models)
    photo = _save(tmp_path / "astronaut.png", data.astronaut(), (256, 256))
    empty = _save(tmp_path / "coffee.png", data.coffee(), (160, 240))
    for source, has_face in ((photo, True), (empty, False)):
        plain, enhanced = tmp_path / "plain.png", tmp_path / "enhanced.png"
        upscale_file(source, plain, UpscaleRequest(MODEL, 2, "png"), settings=settings)
        request = UpscaleRequest(MODEL, 2, "png", enhance_face=True)
        upscale_file(source, enhanced, request, settings=settings)
        if not has_face:
            assert enhanced.read_bytes() == plain.read_bytes()
            continue
        before, after = io.imread(plain).astype(int), io.imread(enhanced).astype(int)
        changed = np.argwhere((before != after).any(axis=2))
        (top, left), (bottom, right) = changed.min(axis=0), changed.max(axis=0)
        # The face is at x 176-266, y 56-174 of the 512x512 output: it and
        # its feathered surroundings changed, the rest did not.
        assert left < 176 and right > 266 and top < 56 and bottom > 174
        assert (right - left) * (bottom - top) < 0.5 * 512 * 512
        inner = (slice(80, 160), slice(190, 250))
        assert np.abs(after[inner] - (255 - before[inner])).mean() < 12


def test_a_model_that_does_not_load_fails_before_decoding_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A model file cut short (copied in by hand) lists as installed; it was
    loaded only after the whole upscale, and failed as an internal error.
    The source here is cut short too, past its header: had decoding started,
    that would be the error."""
    models = tmp_path / "faces"
    model = faces.add(models, nets.invert(tmp_path / "invert.onnx"), "invert")
    whole = model.path.read_bytes()
    model.path.write_bytes(whole[: len(whole) // 2])
    image = _save(tmp_path / "astronaut.png", data.astronaut(), (64, 64)).read_bytes()
    source = tmp_path / "cut.png"
    source.write_bytes(image[: len(image) // 2])
    request = UpscaleRequest(MODEL, 2, "png", enhance_face=True)
    with pytest.raises(faces.FaceEnhancementUnavailableError) as caught:
        upscale_file(source, tmp_path / "out.png", request, settings=_settings(models))
    error = caught.value
    assert error.client_error and str(tmp_path) not in error.public_message
    assert error.public_message.startswith(
        "this server's face-restoration model 'invert' cannot be used (it does not load)"
    )
    # The operator gets what onnxruntime said.
    [record] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert "'invert'" in record.getMessage()
    assert "invert.onnx is not a loadable ONNX model" in record.getMessage()
