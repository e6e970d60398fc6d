"""An independent, untiled run of a network with the plain ``ncnn`` API.

Written from the upstream conventions (RGB in 0..1, the image mirrored at its
edges by the context of the unpadded networks, and by ``MIRRORED_EDGE`` for
the padded ones that mirror their edges, as upstream mirrors its
``prepadding``),
without the engine's runner, geometry or planes, so the engine's tiled results
can be checked against it.
"""

from __future__ import annotations

import math
from functools import cache
from importlib.metadata import distribution

import ncnn
import numpy as np

from upscayl_cloud.engine.geometry import MIRRORED_EDGE
from upscayl_cloud.engine.networks import NETWORKS


def plain_ncnn(key: str, rgb: np.ndarray) -> np.ndarray:
    """``H x W x 3`` floats in 0..1 -> the network's ``sH x sW x 3`` output, clipped."""
    spec = NETWORKS[key]
    net = plain_net(key)
    h, w = rgb.shape[:2]
    c, a = spec.context, spec.align
    pad_h, pad_w = math.ceil(h / a) * a - h, math.ceil(w / a) * a - w
    m = min(MIRRORED_EDGE, spec.tile_pad) if spec.mirror_edges else 0  # cropped off again
    padded = np.pad(rgb, ((c + m, c + m + pad_h), (c + m, c + m + pad_w), (0, 0)), mode="reflect")
    chw = np.ascontiguousarray(padded.transpose(2, 0, 1), dtype=np.float32)
    mat = ncnn.Mat(chw)
    with net.create_extractor() as ex:
        ex.input(spec.input_blob, mat)
        status, out = ex.extract(spec.output_blob)
        assert status == 0
        result = np.array(out, copy=True)
    for pool in _POOLS[key]:
        pool.clear()
    s = spec.scale
    if spec.nearest_residual:
        result += np.repeat(np.repeat(chw[:, c : c + h, c : c + w], s, axis=1), s, axis=2)
    return np.clip(result.transpose(1, 2, 0)[s * m : s * (m + h), s * m : s * (m + w)], 0.0, 1.0)


_POOLS: dict[str, tuple[ncnn.PoolAllocator, ncnn.PoolAllocator]] = {}


@cache
def plain_net(key: str) -> ncnn.Net:
    """The network as ``plain_ncnn`` runs it, on the CPU, loaded once; public
    because bench/edge_padding.py feeds it borders of its own."""
    spec = NETWORKS[key]
    dist = distribution(spec.distribution)
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    # Pools we can empty after each call: ncnn's own would keep every cached
    # network's peak memory for the whole test session.
    pools = _POOLS.setdefault(key, (ncnn.PoolAllocator(), ncnn.PoolAllocator()))
    net.opt.blob_allocator, net.opt.workspace_allocator = pools
    net.load_param(str(dist.locate_file(spec.stem + ".param")))
    net.load_model(str(dist.locate_file(spec.stem + ".bin")))
    return net


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    mse = float(np.mean((np.asarray(a, float) - np.asarray(b, float)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)
