"""Tile overlap per network: how far tiled output is from one untiled call.

Padded networks see zeros past a tile's border, so each tile is grown by
``NetworkSpec.tile_pad`` pixels of overlap that are cropped off afterwards
(engine/geometry.py). Too little overlap leaves seams; too much costs a
network call's worth of work on every tile. This is the measurement behind the
values in engine/networks.py: for each padded network and each overlap, the
engine's tiled output (``tiling.upscale_plane``, overlap set by replacing the
runner's spec as tests/engine/test_networks.py does) is compared with one
untiled plain-ncnn call on the same pixels (tests/engine/reference.py).

Real-CUGAN is unpadded (mirrored context) but its squeeze-excitation blocks
average over the whole input; the engine syncs those means over all tiles.
Its rows compare tiled with untiled at several tile sizes instead.

Inputs are crops of scikit-image's real photos (astronaut, chelsea, coffee):
160x160 with 48 px tiles for the deep RRDB networks (slow on CPUs), 256x256
with 64 px tiles for the compact ones, so tiles never cover a whole crop.
Everything runs on the CPU, as the tests do. The
targets (as in the tests): RRDB and Real-CUGAN PSNR >= 42 dB on every photo;
compact networks at most 2/255 off on every 8-bit pixel. Slow on CPUs: the
23-block RRDB networks take 15-30 minutes each on two cores, the others one to
five minutes, so pick networks and overlaps with the options:

    PYTHONPATH=. .venv/bin/python bench/tiling.py [--pads 0,8,16,24,32,40]
        [--networks realesrgan-x4plus,span-x4-ch48] [--cugan-tiles 48,64,96]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from skimage import data

from tests.engine.reference import plain_ncnn, psnr
from upscayl_cloud.engine.networks import NETWORKS
from upscayl_cloud.engine.options import EngineSettings, available_cores
from upscayl_cloud.engine.planes import Plane, to_float
from upscayl_cloud.engine.runner import load_network
from upscayl_cloud.engine.tiling import upscale_plane

RRDB = ("realesrgan-x4plus", "realesrgan-x4plus-anime", "realsr-df2k-x4")
#: Top-left corner of each crop: detailed areas (face, fur, cup and beans).
PHOTOS = {"astronaut": (30, 140), "chelsea": (20, 110), "coffee": (90, 150)}
#: (crop edge, tile edge) per kind of network.
RRDB_GEOMETRY = (160, 48)
COMPACT_GEOMETRY = (256, 64)
MIN_PSNR = 42.0
MAX_DIFF_255 = 2


@dataclasses.dataclass(frozen=True)
class Score:
    max_diff_255: int  # largest difference between the 8-bit roundings
    psnr: float


def crops(edge: int) -> dict[str, np.ndarray]:
    out = {}
    for name, (y, x) in PHOTOS.items():
        image = getattr(data, name)()[:, :, :3].astype(np.float32) / 255
        out[name] = image[y : y + edge, x : x + edge]
    return out


def score(tiled: np.ndarray, reference: np.ndarray) -> Score:
    diff = np.abs(np.round(tiled * 255) - np.round(reference * 255)).max()
    return Score(int(diff), psnr(tiled, reference))


Config = tuple[int, int | None]  # (tile edge, overlap or None: the spec's own)


def tiled_vs_untiled(
    key: str, pictures: dict[str, np.ndarray], configs: list[Config], work: Path
) -> dict[Config, dict[str, Score]]:
    """Scores per (tile, overlap) and photo; one untiled reference per photo."""
    runner = load_network(
        key, EngineSettings(threads=available_cores(), use_gpu=False, backend="ncnn")
    )
    original = runner.spec
    results: dict[Config, dict[str, Score]] = {config: {} for config in configs}
    try:
        for name, crop in pictures.items():
            plane = Plane.from_array(work / "in.raw", crop)
            reference = plain_ncnn(key, to_float(plane.read_all()))
            for tile, pad in configs:
                if pad is not None:
                    runner.spec = dataclasses.replace(original, tile_pad=pad)
                out = upscale_plane(runner, plane, work / "out.raw", tile)
                results[tile, pad][name] = score(to_float(out.read_all()), reference)
                runner.spec = original
    finally:
        runner.spec = original
    return results


def cell(s: Score) -> str:
    shown = "inf" if math.isinf(s.psnr) else f"{s.psnr:.1f}"
    return f"{s.max_diff_255} / {shown}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pads", default="0,8,16,24,32,40")
    parser.add_argument("--networks", default="", help="comma-separated keys; default: all")
    parser.add_argument("--cugan-tiles", default="48,64,96")
    args = parser.parse_args()
    pads = [int(p) for p in args.pads.split(",")]
    chosen = [k for k in args.networks.split(",") if k] or sorted(NETWORKS)
    padded = [k for k in chosen if NETWORKS[k].padded and NETWORKS[k].tile_pad > 0]
    cugan = [k for k in chosen if NETWORKS[k].global_pools]
    photos = list(PHOTOS)

    header = " | ".join(f"{p} max Δ/255 / PSNR dB" for p in photos)
    print(f"| network | crop | tile | overlap | {header} | target |")
    print("|---|---:|---:|---:|" + "---:|" * len(photos) + "---|")
    failures = []
    with tempfile.TemporaryDirectory(prefix="bench-tiling-") as tmp:
        for key in padded:
            rrdb = key in RRDB
            edge, tile = RRDB_GEOMETRY if rrdb else COMPACT_GEOMETRY
            start = time.perf_counter()
            configs = [(tile, pad) for pad in pads]
            results = tiled_vs_untiled(key, crops(edge), configs, Path(tmp))
            print(f"# {key}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
            for pad in pads:
                scores = results[tile, pad]
                if rrdb:
                    ok = all(s.psnr >= MIN_PSNR for s in scores.values())
                    target = f"PSNR >= {MIN_PSNR:g}"
                else:
                    ok = all(s.max_diff_255 <= MAX_DIFF_255 for s in scores.values())
                    target = f"max Δ <= {MAX_DIFF_255}"
                mark = " (current)" if pad == NETWORKS[key].tile_pad else ""
                cells = " | ".join(cell(scores[p]) for p in photos)
                verdict = "meets" if ok else "**misses**"
                row = f"| {key} | {edge} | {tile} | {pad}{mark} | {cells} | {target}: {verdict} |"
                print(row, flush=True)
                if not ok:
                    failures.append(f"{key} overlap {pad}")
        edge = COMPACT_GEOMETRY[0]
        for key in cugan:
            start = time.perf_counter()
            tiles = [int(t) for t in args.cugan_tiles.split(",")]
            results = tiled_vs_untiled(key, crops(edge), [(t, None) for t in tiles], Path(tmp))
            print(f"# {key}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
            for tile in tiles:
                scores = results[tile, None]
                ok = all(s.psnr >= MIN_PSNR for s in scores.values())
                cells = " | ".join(cell(scores[p]) for p in photos)
                verdict = "meets" if ok else "**misses**"
                context = f"context {NETWORKS[key].context}"
                print(
                    f"| {key} | {edge} | {tile} | {context} | {cells} "
                    f"| PSNR >= {MIN_PSNR:g}: {verdict} |",
                    flush=True,
                )
                if not ok:
                    failures.append(f"{key} tile {tile}")
    print()
    print("Misses the target: " + (", ".join(failures) if failures else "none"))


if __name__ == "__main__":
    main()
