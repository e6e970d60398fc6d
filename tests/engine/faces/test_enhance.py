"""Paste-back, checked numerically on a real photo with a face (``astronaut``).

The "plain upscale" is an exact libvips resize of the photo (the networks are
not what is under test); enhancement runs on a copy of it with tiny ONNX
restorers whose effect is known, so we know what every pixel should be.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from tests.engine.faces import nets
from upscayl_cloud.engine.faces import FaceModel, FaceSettings, align, enhance, paste
from upscayl_cloud.engine.faces.detect import detect_faces
from upscayl_cloud.engine.planeio import resize
from upscayl_cloud.engine.planes import Plane, to_float

CPU = FaceSettings(use_gpu=False, threads=1)


def _planes(work: Path, image: np.ndarray, scale: int) -> tuple[Plane, Plane, Plane]:
    """Source plane, plain upscale, and a copy of it to enhance."""
    source = Plane.from_array(work / "source.u16", image.astype(np.float32) / 255.0)
    plain = resize(source, source.width * scale, source.height * scale, work / "plain.u16")
    shutil.copyfile(plain.path, work / "color.u16")
    color = Plane(work / "color.u16", plain.width, plain.height, 3)
    return source, plain, color


def _expected_weight(image: np.ndarray, plane: Plane) -> np.ndarray:
    """The blend weight of the one face on ``plane``, computed independently."""
    (face,) = detect_faces(image, 24)
    sx, sy = plane.width / image.shape[1], plane.height / image.shape[0]
    landmarks = (face.landmarks + 0.5) * np.array([sx, sy]) - 0.5
    matrix = align.face_transform(landmarks)
    return cv2.warpAffine(
        paste.feather_mask(), align.invert(matrix), (plane.width, plane.height), borderValue=0.0
    )


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()


@pytest.fixture
def invert_model(tmp_path: Path) -> FaceModel:
    return FaceModel("invert", nets.invert(tmp_path / "invert.onnx"))


@pytest.mark.parametrize(
    ("crop", "scale"),
    [
        ((slice(None), slice(None)), 2),
        ((slice(40, 200), slice(160, 290)), 8),
        ((slice(80, None), slice(195, None)), 4),
    ],
    ids=["whole-2x", "close-up-8x", "face-at-the-corner-4x"],
)
def test_face_region_follows_the_network_and_the_rest_is_untouched(
    tmp_path: Path, astronaut: np.ndarray, invert_model: FaceModel, crop, scale: int
) -> None:
    image = np.ascontiguousarray(astronaut[crop])
    source, plain, color = _planes(tmp_path, image, scale)
    settings = FaceSettings(use_gpu=False, threads=1, colour_match=False)

    assert enhance(color, source, invert_model, tmp_path, settings) == 1

    before, after = to_float(plain.read_all()), to_float(color.read_all())
    weight = _expected_weight(image, plain)
    # Bilinear warps of a shrunk mask reach a pixel further than ours.
    outside = cv2.dilate((weight > 0).astype(np.uint8), np.ones((5, 5), np.uint8)) == 0
    changed = (color.read_all() != plain.read_all()).any(axis=2)
    assert changed.any() and outside.any()
    # Outside the feathered mask: byte for byte the plain upscale.
    assert not changed[outside].any()
    # Where the mask is full, the face is the negative, as the network says
    # (up to the interpolation of warping there and back).
    inner = weight > 0.999
    assert inner.sum() > 0.1 * weight.size / scale**2
    error = np.abs(after[inner] - (1.0 - before[inner])).mean()
    assert error < 0.03, error
    assert np.abs(after[inner] - before[inner]).mean() > 0.2


def test_colour_matching_keeps_the_face_tone(tmp_path: Path, astronaut: np.ndarray) -> None:
    model = FaceModel("bright", nets.brighten(tmp_path / "bright.onnx", 0.5))
    source, plain, color = _planes(tmp_path, astronaut, 2)
    inner = _expected_weight(astronaut, plain) > 0.999
    before = to_float(plain.read_all())[inner].mean(axis=0)

    enhance(color, source, model, tmp_path, CPU)
    matched = to_float(color.read_all())[inner].mean(axis=0)
    shutil.copyfile(plain.path, color.path)
    enhance(color, source, model, tmp_path, FaceSettings(use_gpu=False, colour_match=False))
    brightened = to_float(color.read_all())[inner].mean(axis=0)

    assert (brightened - before).min() > 0.1
    np.testing.assert_allclose(matched, before, atol=0.02)


def test_banded_paste_equals_whole_paste(
    tmp_path: Path, astronaut: np.ndarray, invert_model: FaceModel
) -> None:
    source, plain, color = _planes(tmp_path, astronaut, 2)
    enhance(color, source, invert_model, tmp_path, CPU)
    whole = color.read_all()
    shutil.copyfile(plain.path, color.path)
    enhance(color, source, invert_model, tmp_path, FaceSettings(use_gpu=False, band_pixels=5000))
    # Warps of different bands round their fixed-point coordinates apart:
    # at most one 16-bit step.
    difference = np.abs(color.read_all().astype(int) - whole.astype(int))
    assert difference.max() <= 1


def test_detection_on_a_reduced_copy_still_finds_the_face(
    tmp_path: Path, astronaut: np.ndarray, invert_model: FaceModel
) -> None:
    source, _plain, color = _planes(tmp_path, astronaut, 2)
    settings = FaceSettings(use_gpu=False, threads=1, detect_max_edge=320)
    assert enhance(color, source, invert_model, tmp_path, settings) == 1
    assert [p.name for p in tmp_path.glob("faces-preview*")] == []


@pytest.mark.parametrize("name", ["coffee", "flat"])
def test_image_without_faces_is_untouched(tmp_path: Path, name: str) -> None:
    image = data.coffee() if name == "coffee" else np.full((200, 300, 3), 90, np.uint8)
    source, plain, color = _planes(tmp_path, image, 2)
    # The model file does not exist: without a face it is never even opened.
    missing = FaceModel("missing", tmp_path / "missing.onnx")
    assert enhance(color, source, missing, tmp_path, CPU) == 0
    assert color.path.read_bytes() == plain.path.read_bytes()


def test_grey_photos_keep_grey_faces(tmp_path: Path) -> None:
    image = np.dstack([data.camera()] * 3)  # a black-and-white photo with a face
    model = FaceModel("tint", nets.tint(tmp_path / "tint.onnx", (1.0, 0.3, -0.5)))
    source, plain, color = _planes(tmp_path, image, 2)
    assert enhance(color, source, model, tmp_path, CPU) == 1
    tinted = color.read_all().astype(int)
    assert np.abs(tinted[..., 0] - tinted[..., 2]).max() > 10_000
    shutil.copyfile(plain.path, color.path)
    assert enhance(color, source, model, tmp_path, CPU, grey=True) == 1
    kept = color.read_all()
    assert (kept != plain.read_all()).any()
    assert (kept[..., 0] == kept[..., 1]).all() and (kept[..., 1] == kept[..., 2]).all()
