"""One network pass over a whole plane, tile by tile.

Memory holds one tile at a time whatever the image size: tiles are read from
the source plane and written to the destination plane on disk. Planes with
one band (alpha) go through the network as three equal channels and come
back as their mean, so alpha is upscaled by the network, as Real-ESRGAN does.

Real-CUGAN's squeeze-excitation blocks average over their whole input, so a
tile alone would get other colours than the whole image. Like the upstream
program's "sync gap" mode, the global means (blobs ``gap0..gap3``) are first
gathered over every tile, one stage at a time, and then injected into each
tile's final run, so tiles agree with each other and with the untiled image.

Reading a tile (``pread`` plus conversion to float) and writing one back
(conversion to samples plus ``pwrite``) overlap with the network call: both
runtimes release the GIL while they infer, and with the faster backends these
steps would otherwise be a large share of a pass. The look-ahead is bounded
(one tile read ahead; one write pending on a CPU, ``WRITES_IN_FLIGHT`` on a
GPU), so memory stays a few tiles.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from upscayl_cloud.engine.backends.base import Network
from upscayl_cloud.engine.errors import CancelledError
from upscayl_cloud.engine.geometry import Tile, TileRule, mirror_indices, plan_tiles
from upscayl_cloud.engine.options import EngineSettings
from upscayl_cloud.engine.planes import Plane, chw_to_samples, to_float

log = logging.getLogger(__name__)

TileDone = Callable[[], None]
ShouldCancel = Callable[[], bool]

#: Names the helper threads that read and write tiles, for logs and tests.
TILE_THREAD_PREFIX = "upscayl-tiles"
#: Tile writes (conversion to samples, then ``pwrite``) that may run at once
#: while a network on a GPU goes on. There the compact networks' calls are a
#: few milliseconds and one writer thread was the pass: on an H200 machine's
#: 16 cores, 4 writes took a 1024² pass at 4x without its network from 0.27
#: to 0.15 s (tile 512; 8 gained nothing more; bench/README.md, "Tile output
#: conversion"). Each pending write holds one tile's result in host memory
#: (docs/deployment.md, "Sizing"). On a CPU the network is the pass and
#: writes go one at a time, as they always did.
WRITES_IN_FLIGHT = 4


def auto_tile_size(runner: Network, memory_mb: int) -> int:
    """The largest tile core whose network call fits in ``memory_mb``.

    Memory is per source pixel, so the overlap (or context) counts against
    the budget; never below 32 pixels of core, where overlap would dominate.
    """
    spec = runner.spec
    source_edge = math.isqrt(memory_mb * 1024 // max(1, runner.kib_per_pixel))
    margin = 2 * max(spec.tile_pad, spec.context)
    core = max(32, source_edge - margin)
    return core - core % spec.align


def configured_tile_size(runner: Network, settings: EngineSettings) -> int:
    """The operator's tile core, or else the largest that fits the budget."""
    return settings.tile_size or auto_tile_size(runner, settings.tile_memory_mb)


def tile_rule(runner: Network) -> TileRule:
    spec = runner.spec
    return TileRule(
        spec.scale,
        spec.context,
        spec.align,
        spec.tile_pad,
        runner.width_timings,
        mirror_edges=spec.mirror_edges,
    )


def syncs_global_pools(runner: Network, tiles: list[Tile]) -> bool:
    return bool(runner.spec.global_pools) and len(tiles) > 1


def count_calls(runner: Network, width: int, height: int, tile_size: int) -> int:
    """Network calls one pass makes (for progress): tiles, times the sync stages."""
    tiles = plan_tiles(width, height, tile_size, tile_rule(runner))
    stages = 1 + (len(runner.spec.global_pools) if syncs_global_pools(runner, tiles) else 0)
    return len(tiles) * stages


def upscale_plane(
    runner: Network,
    source: Plane,
    destination: Path,
    tile_size: int,
    on_call: TileDone | None = None,
    should_cancel: ShouldCancel | None = None,
) -> Plane:
    """Run ``runner`` over ``source`` and write the result to a new plane."""
    scale = runner.spec.scale
    out = Plane.create(destination, source.width * scale, source.height * scale, source.bands)
    tiles = plan_tiles(source.width, source.height, tile_size, tile_rule(runner))

    def call(run: Callable[[], np.ndarray]) -> np.ndarray:
        if should_cancel is not None and should_cancel():
            raise CancelledError("the task was cancelled")
        result = run()
        if on_call is not None:
            on_call()
        return result

    try:
        _run_tiles(runner, source, out, tiles, call)
    finally:
        # Between passes a worker holds at most one tile budget of working
        # memory (ncnn: none; OpenVINO: its recent networks', memory_keeper).
        runner.release_memory()
    return out


def _run_tiles(
    runner: Network,
    source: Plane,
    out: Plane,
    tiles: list[Tile],
    call: Callable[[Callable[[], np.ndarray]], np.ndarray],
) -> None:
    """Every network call of one pass, with reads and writes on helper threads.

    The network runs on the calling thread, so ``call`` (cancellation and
    progress) keeps running there. Helpers let the next tile's read and
    earlier tiles' writes (one on a CPU, up to ``WRITES_IN_FLIGHT`` on a
    GPU) run at the same time as the network call; reads and writes touch
    different files, and the tiles' targets partition the output
    (geometry.py), so in whatever order the writes end the output is the
    serial loop's, byte for byte. Whatever ends the pass, the helpers are
    stopped here: work not started is dropped, work started is waited for,
    so no write happens after this returns; the error raised is the
    network's, or the oldest failed write's.
    """
    # Every tile of a pass has one shape (geometry.py). That also keeps
    # ncnn's pools from growing: with tiles of several sizes, a slightly
    # larger one allocated anew and the pool kept both (measured: 1.7 -> 3.9
    # GB over four tile sizes of one image, bench/README.md "Memory").
    injected: dict[str, np.ndarray] = {}
    in_flight = WRITES_IN_FLIGHT if runner.on_gpu else 1
    pending: deque[Future[None]] = deque()
    pool = ThreadPoolExecutor(max_workers=1 + in_flight, thread_name_prefix=TILE_THREAD_PREFIX)
    try:
        if syncs_global_pools(runner, tiles):
            for blob in runner.spec.global_pools:
                total = None
                for tile, chw in _read_ahead(pool, source, tiles):
                    means = call(lambda chw=chw, blob=blob: runner.extract(chw, blob, injected))
                    weighted = means * (tile.core.width * tile.core.height)
                    total = weighted if total is None else total + weighted
                injected[blob] = total / (source.width * source.height)

        for tile, chw in _read_ahead(pool, source, tiles):
            result = call(lambda chw=chw: runner.run(chw, injected))
            # A failed write (a full disk) ends the pass at the first call
            # after it failed, not when its turn comes: done writes are
            # collected, and the oldest that failed raises.
            while pending and (len(pending) == in_flight or pending[0].done()):
                pending.popleft().result()
            failed = next((w for w in pending if w.done() and w.exception() is not None), None)
            if failed is not None:
                pending.remove(failed)
                failed.result()
            pending.append(pool.submit(_write_tile, out, tile, result, source.bands))
        while pending:
            pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        # Another error ends the pass (the network's, or an older write's):
        # a write that failed as well is not raised, but not lost either.
        for write in pending:
            if not write.cancelled() and write.exception() is not None:
                log.warning("a tile write failed as the pass ended: %s", write.exception())


def _read_ahead(
    pool: ThreadPoolExecutor, source: Plane, tiles: list[Tile]
) -> Iterator[tuple[Tile, np.ndarray]]:
    """Each tile with its network input, the next one read while the caller
    works on this one (one tile ahead, never more)."""
    if not tiles:
        return
    ahead = pool.submit(_network_input, source, tiles[0])
    try:
        for index, tile in enumerate(tiles):
            chw = ahead.result()
            if index + 1 < len(tiles):
                ahead = pool.submit(_network_input, source, tiles[index + 1])
            yield tile, chw
    finally:
        # The caller stopped early (an error, a cancellation): drop the read.
        ahead.cancel()


def _write_tile(out: Plane, tile: Tile, result: np.ndarray, bands: int) -> None:
    """The part of a network output that the tile keeps, written in place."""
    keep = result[:, tile.keep.y0 : tile.keep.y1, tile.keep.x0 : tile.keep.x1]
    out.write(tile.target.x0, tile.target.y0, _from_network(keep, bands))


def _network_input(plane: Plane, tile: Tile) -> np.ndarray:
    """The tile's source rectangle as a ``3 x h x w`` float blob, mirrored
    where it reaches outside the image."""
    s = tile.source
    inside = s.x0 >= 0 and s.y0 >= 0 and s.x1 <= plane.width and s.y1 <= plane.height
    if inside:
        pixels = plane.read(s.x0, s.y0, s.x1, s.y1)
    else:
        rows = mirror_indices(s.y0, s.y1, plane.height)
        cols = mirror_indices(s.x0, s.x1, plane.width)
        box = plane.read(min(cols), min(rows), max(cols) + 1, max(rows) + 1)
        pixels = box[np.ix_([r - min(rows) for r in rows], [c - min(cols) for c in cols])]
    chw = to_float(pixels).transpose(2, 0, 1)
    if plane.bands == 1:
        chw = np.repeat(chw, 3, axis=0)
    return np.ascontiguousarray(chw)


def _from_network(chw: np.ndarray, bands: int) -> np.ndarray:
    if bands == 1:
        # Clip each channel before averaging, as each is an image of its own.
        chw = np.clip(chw, 0.0, 1.0).mean(axis=0, keepdims=True)
    return chw_to_samples(chw)
