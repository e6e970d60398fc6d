"""The tiling pipeline's own cost: a pass whose network costs nothing.

On a GPU the compact networks' calls are a small part of a pass: on an H200,
ONNX Runtime's CUDA calls of realesr-animevideov3-x4 were 9-11 % of a 1024²
pass at 4x, the rest the tiles' reads, conversions and writes on the CPU
(bench/README.md, "GPU time breakdown"). This times ``upscale_plane`` with a
stand-in network that returns a constant tile, so only that rest is left,
once with the whole-tile conversion that ``planes.chw_to_samples`` replaced
and then with ``chw_to_samples`` and each ``--writes`` number of tile writes
in flight (``tiling.WRITES_IN_FLIGHT``), alternating in one process, and
prints the ratios to the first.

    PYTHONPATH=src python bench/tile_io.py [--edge 1024] [--tiles 256,512,1024]
        [--repeats 5] [--writes 1,2,4]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Mapping
from os import cpu_count
from pathlib import Path

import numpy as np

from upscayl_cloud.engine import tiling
from upscayl_cloud.engine.backends.base import Network
from upscayl_cloud.engine.networks import NETWORKS
from upscayl_cloud.engine.planes import Plane, chw_to_samples, to_samples
from upscayl_cloud.engine.tiling import WRITES_IN_FLIGHT


class ConstantNetwork(Network):
    """Returns a mid-grey tile of the right shape: the pass without a network.
    It stands in for a network on a GPU, whose calls cost the CPU little, so
    the tiler lets writes overlap as it does there (``WRITES_IN_FLIGHT``)."""

    backend = "constant"

    @property
    def device(self) -> str:
        return "none"

    @property
    def on_gpu(self) -> bool:
        return True

    def _forward(
        self, chw: np.ndarray, blob: str, injected: Mapping[str, np.ndarray]
    ) -> np.ndarray:
        spec = self.spec
        height, width = (spec.scale * (edge - 2 * spec.context) for edge in chw.shape[1:])
        return np.full((3, height, width), 0.5, dtype=np.float32)

    def release_memory(self) -> None:
        pass


def whole_tile(chw: np.ndarray) -> np.ndarray:
    """The conversion before ``chw_to_samples``: one pass per step over the tile."""
    return to_samples(chw.transpose(1, 2, 0))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--network", default="realesr-animevideov3-x4")
    parser.add_argument("--edge", type=int, default=1024)
    parser.add_argument("--tiles", default="256,512,1024")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--writes", default="1", help="tiling.WRITES_IN_FLIGHT values to time, banded (1,2,4)"
    )
    args = parser.parse_args()
    network = ConstantNetwork(NETWORKS[args.network])
    rng = np.random.default_rng(0)
    image = rng.random((args.edge, args.edge, 3), dtype=np.float32)
    variants = [("whole, 1 write", whole_tile, 1)] + [
        (f"banded, {n} write{'s' if n > 1 else ''}", chw_to_samples, n)
        for n in (int(w) for w in args.writes.split(","))
    ]
    base = variants[0][0]
    print(
        f"{args.network} stand-in, {args.edge}² input at {network.spec.scale}x, {cpu_count()} CPUs"
    )
    print(f"tile | {' | '.join(name + ' s' for name, _, _ in variants)} | ratios to {base}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = Plane.from_array(work / "in.raw", image)
        for tile in (int(t) for t in args.tiles.split(",")):
            times: dict[str, list[float]] = {name: [] for name, _, _ in variants}
            for _ in range(args.repeats):
                for name, convert, writes in variants:
                    tiling.chw_to_samples, tiling.WRITES_IN_FLIGHT = convert, writes
                    start = time.perf_counter()
                    tiling.upscale_plane(network, source, work / "out.raw", tile)
                    times[name].append(time.perf_counter() - start)
            tiling.chw_to_samples, tiling.WRITES_IN_FLIGHT = chw_to_samples, WRITES_IN_FLIGHT
            medians = [statistics.median(times[name]) for name, _, _ in variants]
            ratios = " | ".join(f"{medians[0] / m:.2f}" for m in medians[1:])
            print(f"{tile} | {' | '.join(f'{m:.3f}' for m in medians)} | {ratios}")


if __name__ == "__main__":
    main()
