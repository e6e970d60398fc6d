"""The ONNX contract: what ``validate`` accepts and refuses, and real inference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.engine.faces import nets
from upscayl_cloud.engine.faces import restorer
from upscayl_cloud.engine.faces.errors import FaceModelError


def test_accepts_a_model_of_the_contract(tmp_path: Path) -> None:
    signature = restorer.validate(nets.invert(tmp_path / "invert.onnx"))
    assert signature.image_input == "x" and signature.output == "y"
    assert signature.scalar_inputs == ()


def test_inference_follows_the_network(tmp_path: Path) -> None:
    net = restorer.load(nets.invert(tmp_path / "invert.onnx"), use_gpu=False)
    face = np.random.default_rng(0).random((512, 512, 3), dtype=np.float32)
    np.testing.assert_allclose(net.restore(face), 1.0 - face, atol=1e-6)


def test_fidelity_input_gets_the_configured_weight(tmp_path: Path) -> None:
    path = nets.with_fidelity(tmp_path / "codeformer-like.onnx")
    assert restorer.validate(path).scalar_inputs == (("w", np.float64),)
    face = np.full((512, 512, 3), 0.25, np.float32)
    identity = restorer.load(path, use_gpu=False, fidelity=0.5)
    np.testing.assert_allclose(identity.restore(face), 0.25, atol=1e-6)
    darker = restorer.load(path, use_gpu=False, fidelity=0.0)  # out = 0 -> grey 0.5
    np.testing.assert_allclose(darker.restore(face), 0.5, atol=1e-6)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda p: nets.invert(p, [1, 3, 256, 256]), "expected 1x3x512x512"),
        (nets.grey_output, "expected 1x3x512x512"),
        (lambda p: nets.affine(p, 127.5, 127.5), "expected RGB in [-1, 1]"),
        (lambda p: nets.affine(p, 0.5, 0.5), "looks like a 0..1 model"),
        (nets.nan_output, "NaN"),
    ],
    ids=["input-256", "grey-output", "0-255-output", "0-1-output", "nan"],
)
def test_refuses_models_outside_the_contract(tmp_path: Path, build, message: str) -> None:
    path = build(tmp_path / "bad.onnx")
    with pytest.raises(FaceModelError, match=message.replace("[", r"\[").replace("]", r"\]")):
        restorer.validate(path)


def test_refuses_a_file_that_is_not_onnx(tmp_path: Path) -> None:
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"\x89PNG not a model at all")
    with pytest.raises(FaceModelError, match="not a loadable ONNX model"):
        restorer.validate(path)
