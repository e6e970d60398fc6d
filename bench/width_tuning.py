"""Tiles that step around slow widths against tiles at any width, interleaved.

On this shared 2-core machine the whole CPU's speed moves 2x within seconds,
so two backends run one after the other (``bench/distinct_sizes.py``) differ
by that much for no reason of their own. Here both plans run in one process
on the same compiled networks, alternating image by image, three times each,
and each image's median is compared: what is left is the plan's doing. Every
size first runs once with each plan, so widths are already timed and
compilations made (the steady state of a worker; the timing's own cost is in
``bench/distinct_sizes.py``'s cold column).

Images shorter than ``TUNED_MIN_HEIGHT`` time no width themselves; with
``--short`` the sizes are that short, and the widths they need are first
tuned as ``upscayl-cloud models tune`` does (``engine.tuning``), so the
stepped plan is the one a tuned machine runs.

    PYTHONPATH=. .venv/bin/python bench/width_tuning.py
    PYTHONPATH=. .venv/bin/python bench/width_tuning.py --models upscayl-lite-4x --seeds 2
    PYTHONPATH=. .venv/bin/python bench/width_tuning.py --short
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from bench.distinct_sizes import sizes, source_image

from upscayl_cloud.engine.backends.openvino import OpenVinoNetwork
from upscayl_cloud.engine.catalog import Run, get_model
from upscayl_cloud.engine.geometry import TUNED_MIN_HEIGHT, WIDTH_SLACK, plan_tiles
from upscayl_cloud.engine.options import EngineSettings, UpscaleRequest, available_cores
from upscayl_cloud.engine.pipeline import upscale_file
from upscayl_cloud.engine.runner import load_network
from upscayl_cloud.engine.tiling import auto_tile_size, tile_rule
from upscayl_cloud.engine.tuning import tune

ROUNDS = 3

#: The engine's own choice, and the benchmark-only override that turns it off.
PLANS = {"stepped": OpenVinoNetwork.width_timings, "any width": property(lambda self: None)}


def _use(plan: str) -> None:
    OpenVinoNetwork.width_timings = PLANS[plan]  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="quick-clear-4x,upscayl-lite-4x")
    parser.add_argument("--seeds", default="2,3", help="seeds of bench/distinct_sizes.py's sizes")
    parser.add_argument("--count", type=int, default=8, help="sizes per seed")
    parser.add_argument(
        "--short", action="store_true", help=f"heights under {TUNED_MIN_HEIGHT}, widths tuned"
    )
    args = parser.parse_args()
    threads = available_cores()
    settings = EngineSettings(threads=threads, use_gpu=False, backend="openvino")
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"- Date: {time.strftime('%F %H:%M %Z')}; load average at the start: {load}")
    print(f"- {threads} threads; 4x to PNG; median of {ROUNDS} interleaved runs per image\n")
    print("| model | image | tiles' source widths | stepped s | any width s | x |")
    print("|---|---|---|---:|---:|---:|")
    for model in args.models.split(","):
        work = Path(tempfile.mkdtemp(prefix="width-tuning-"))
        draw = short_sizes if args.short else sizes
        shapes = [s for seed in args.seeds.split(",") for s in draw(model, args.count, int(seed))]
        request = UpscaleRequest(model, 4, "png")
        paths = [source_image(work, w, h) for w, h in shapes]
        if args.short:
            _tune(model, settings, max(w for w, _ in shapes))

        for path in paths:  # widths timed, networks compiled
            for plan in PLANS:
                _run(path, plan, request, settings)
        totals = dict.fromkeys(PLANS, 0.0)
        changed = dict.fromkeys(PLANS, 0.0)
        for path, (width, height) in zip(paths, shapes, strict=True):
            times: dict[str, list[float]] = {plan: [] for plan in PLANS}
            for _ in range(ROUNDS):
                for plan in PLANS:
                    times[plan].append(_run(path, plan, request, settings))
            median = {plan: statistics.median(seconds) for plan, seconds in times.items()}
            widths = _source_widths(model, settings, width, height)
            for plan in PLANS:
                totals[plan] += median[plan]
                if widths != [width]:
                    changed[plan] += median[plan]
            ratio = median["any width"] / median["stepped"]
            print(
                f"| {model} | {width}x{height} | {', '.join(map(str, widths))} "
                f"| {median['stepped']:.3f} | {median['any width']:.3f} | {ratio:.2f} |",
                flush=True,
            )
        for label, seconds in (("all images", totals), ("images whose plan changed", changed)):
            if seconds["stepped"]:
                ratio = seconds["any width"] / seconds["stepped"]
                print(
                    f"| {model} | **{label}** | | {seconds['stepped']:.2f} "
                    f"| {seconds['any width']:.2f} | **{ratio:.2f}** |"
                )
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"\nLoad average at the end: {load}; {time.strftime('%F %H:%M %Z')}")


def short_sizes(model: str, count: int, seed: int) -> list[tuple[int, int]]:
    """``count`` distinct sizes as wide as ``sizes``' but too short to time
    a width (``TUNED_MIN_HEIGHT``)."""
    draw = random.Random(f"short-{seed}-{model}")
    return [(w, draw.randint(64, TUNED_MIN_HEIGHT - 1)) for w, _ in sizes(model, count, seed)]


def _tune(model: str, settings: EngineSettings, widest: int) -> None:
    """Time every width the images can need, as ``models tune`` does."""
    _use("stepped")
    first = next(step for step in get_model(model).plan(4) if isinstance(step, Run))
    network = load_network(first.network, settings)
    done = tune(network, range(18, widest + 2 * network.spec.tile_pad + WIDTH_SLACK + 1))
    if done is not None:
        print(f"- {first.network}: {len(done.widths)} widths tuned in {done.seconds:.1f} s\n")


def _run(path: Path, plan: str, request: UpscaleRequest, settings: EngineSettings) -> float:
    _use(plan)
    start = time.perf_counter()
    upscale_file(path, path.with_name("out.png"), request, settings=settings)
    return time.perf_counter() - start


def _source_widths(model: str, settings: EngineSettings, width: int, height: int) -> list[int]:
    """The first pass's tile source widths with the engine's plan."""
    _use("stepped")
    first = next(step for step in get_model(model).plan(4) if isinstance(step, Run))
    network = load_network(first.network, settings)
    tiles = plan_tiles(
        width, height, auto_tile_size(network, settings.tile_memory_mb), tile_rule(network)
    )
    return [tile.source.width for tile in tiles if tile.core.y0 == 0]


if __name__ == "__main__":
    main()
