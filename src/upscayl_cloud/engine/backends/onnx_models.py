"""The catalog's networks as ONNX, converted from the shipped ncnn weights.

Conversion takes 10-300 ms (realesrgan-x4plus reads 33 MB) and is done in
memory; each backend keeps what its runtime made of the bytes, not the
bytes themselves (up to 67 MB of fp32 weights each).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from upscayl_cloud.engine.convert.to_onnx import build_onnx
from upscayl_cloud.engine.networks import NETWORKS
from upscayl_cloud.engine.weights import locate


def onnx_bytes(
    key: str, outputs: tuple[str, ...], injected: tuple[str, ...] = (), half: bool = False
) -> bytes:
    """The serialised ONNX model of network ``key``, returning ``outputs``,
    with ``injected`` blobs as extra inputs (see ``convert.to_onnx``).

    ``half``: weights and every operation in fp16, inputs and outputs still
    fp32 (one Cast each). ONNX Runtime's CUDA provider runs a graph in the
    types it declares, so this is what puts its convolutions on the GPU's
    fp16 tensor cores; ONNX Runtime's own converter keeps the inputs that
    must stay fp32 (Resize's scales) as they are, and would keep the
    operators on its block list (Upsample, Min, Max: none in the catalog's
    graphs) in fp32 behind casts.
    """
    spec = NETWORKS[key]
    files = locate(spec.distribution, spec.stem)
    model = build_onnx(files.param, files.bin, spec.input_blob, outputs, injected)
    if half:
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(model, keep_io_types=True)
    return model.SerializeToString()


def onnx_feeds(
    input_blob: str, chw: np.ndarray, injected: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """A call's inputs in the converted graph's shapes: a batch axis on
    everything, and ncnn's 1-D blobs (Real-CUGAN's global means) as
    ``1 x c x 1 x 1``."""
    feeds = {input_blob: np.ascontiguousarray(chw[None], dtype=np.float32)}
    for name, value in injected.items():
        value = np.asarray(value, dtype=np.float32)
        feeds[name] = value.reshape((1, -1, 1, 1) if value.ndim == 1 else (1, *value.shape))
    return feeds
