"""A pass over a whole plane: reads and writes overlap the network calls, yet
the output, the errors, the cancellation and the progress are the serial
loop's."""

import logging
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from upscayl_cloud.engine import tiling
from upscayl_cloud.engine.backends.base import Network
from upscayl_cloud.engine.errors import CancelledError
from upscayl_cloud.engine.geometry import plan_tiles
from upscayl_cloud.engine.options import EngineSettings
from upscayl_cloud.engine.planes import Plane
from upscayl_cloud.engine.runner import load_network
from upscayl_cloud.engine.tiling import (
    TILE_THREAD_PREFIX,
    count_calls,
    syncs_global_pools,
    tile_rule,
    upscale_plane,
)

NCNN = EngineSettings(threads=2, use_gpu=False, backend="ncnn")


def _serial(runner: Network, source: Plane, tile_size: int) -> np.ndarray:
    """The pass as a plain loop, one step after the other, all in memory:
    what the overlapped pass must reproduce byte for byte."""
    scale = runner.spec.scale
    out = np.zeros((source.height * scale, source.width * scale, source.bands), np.uint16)
    tiles = plan_tiles(source.width, source.height, tile_size, tile_rule(runner))
    injected: dict[str, np.ndarray] = {}
    if syncs_global_pools(runner, tiles):
        for blob in runner.spec.global_pools:
            total = 0
            for tile in tiles:
                means = runner.extract(tiling._network_input(source, tile), blob, injected)
                total = total + means * (tile.core.width * tile.core.height)
            injected[blob] = total / (source.width * source.height)
    for tile in tiles:
        result = runner.run(tiling._network_input(source, tile), injected)
        k, t = tile.keep, tile.target
        part = tiling._from_network(result[:, k.y0 : k.y1, k.x0 : k.x1], source.bands)
        out[t.y0 : t.y1, t.x0 : t.x1] = part
    return out


def _targets_in_order(runner: Network, source: Plane, tile_size: int) -> list[tuple[int, int]]:
    """Where each tile lands, in the order the pass runs them (largest first,
    which for these networks is the plan's order)."""
    tiles = plan_tiles(source.width, source.height, tile_size, tile_rule(runner))
    tiles.sort(key=lambda t: t.source.width * t.source.height, reverse=True)
    return [(t.target.x0, t.target.y0) for t in tiles]


def _helpers_alive() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(TILE_THREAD_PREFIX)]


class _Writes:
    """Every write to one plane file, and whether the pass had returned by then."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
        self.targets: list[tuple[int, int]] = []
        self.after_return = 0
        self.returned = False
        self.active = self.most_active = 0
        lock = threading.Lock()
        original = Plane.write

        def write(plane: Plane, x0: int, y0: int, data: np.ndarray) -> None:
            if plane.path == path:
                with lock:
                    self.active += 1
                    self.most_active = max(self.most_active, self.active)
                # Slow writes make a write that outlives the pass likely to show.
                time.sleep(0.02)
                with lock:
                    self.after_return += self.returned
                    self.targets.append((x0, y0))
                    self.active -= 1
            original(plane, x0, y0, data)

        monkeypatch.setattr(Plane, "write", write)


class _FailsOnThirdCall(Network):
    """A real network that fails on its third call, as a device lost in the
    middle of an image would: such a failure cannot be provoked for real."""

    backend = "ncnn"

    def __init__(self, inner: Network) -> None:
        super().__init__(inner.spec)
        self.inner = inner
        self.calls = 0
        self.released = False

    @property
    def device(self) -> str:
        return self.inner.device

    def _forward(
        self, chw: np.ndarray, blob: str, injected: Mapping[str, np.ndarray]
    ) -> np.ndarray:
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("the device went away on the third tile")
        return self.inner._forward(chw, blob, injected)

    def release_memory(self) -> None:
        self.released = True
        self.inner.release_memory()


@pytest.mark.parametrize(
    ("key", "bands"),
    [
        ("realesr-animevideov3-x2", 3),
        ("span-x2-ch48", 3),
        ("span-x2-ch48", 1),
        ("realcugan-se-up2x-conservative", 3),
    ],
)
def test_the_overlapped_pass_is_the_serial_loop_bit_for_bit(key, bands, photo, tmp_path):
    """Many small tiles of a real photo (edge tiles, mirrored context, an
    alpha plane, Real-CUGAN's sync stages): every output sample identical."""
    crop = photo[60:156, 100:228] if bands == 3 else photo[60:156, 100:228, 1:2]
    source = Plane.from_array(tmp_path / "in.raw", crop)
    runner = load_network(key, NCNN)
    tile_size = 32
    assert len(plan_tiles(source.width, source.height, tile_size, tile_rule(runner))) >= 12
    out = upscale_plane(runner, source, tmp_path / "out.raw", tile_size).read_all()
    np.testing.assert_array_equal(out, _serial(runner, source, tile_size))


def test_progress_comes_from_the_calling_thread_after_each_call(photo, tmp_path):
    source = Plane.from_array(tmp_path / "in.raw", photo[:96, :128])
    runner = load_network("span-x2-ch48", NCNN)
    callers: list[threading.Thread] = []
    upscale_plane(
        runner,
        source,
        tmp_path / "out.raw",
        32,
        on_call=lambda: callers.append(threading.current_thread()),
    )
    assert len(callers) == count_calls(runner, source.width, source.height, 32)
    assert set(callers) == {threading.current_thread()}


def test_reads_stay_one_tile_ahead(photo, tmp_path, monkeypatch):
    """Memory holds a couple of tiles whatever the image size: the pass never
    reads more than one tile ahead of the network."""
    source = Plane.from_array(tmp_path / "in.raw", photo[:128, :192])
    runner = load_network("span-x2-ch48", NCNN)
    reads = 0
    lead: list[int] = []
    original = tiling._network_input

    def counted(plane: Plane, tile: tiling.Tile) -> np.ndarray:
        nonlocal reads
        reads += 1
        return original(plane, tile)

    monkeypatch.setattr(tiling, "_network_input", counted)
    calls = 0

    def on_call() -> None:
        nonlocal calls
        calls += 1
        lead.append(reads - calls)

    upscale_plane(runner, source, tmp_path / "out.raw", 32, on_call=on_call)
    assert calls == reads == 24
    assert max(lead) <= 1


def test_a_failing_network_call_propagates_and_stops_every_helper(photo, tmp_path, monkeypatch):
    source = Plane.from_array(tmp_path / "in.raw", photo[:128, :160])
    runner = _FailsOnThirdCall(load_network("span-x2-ch48", NCNN))
    destination = tmp_path / "out.raw"
    writes = _Writes(monkeypatch, destination)
    with pytest.raises(RuntimeError, match="third tile"):
        upscale_plane(runner, source, destination, 32)
    writes.returned = True
    assert _helpers_alive() == []
    assert runner.calls == 3
    assert runner.released
    time.sleep(0.1)
    assert writes.after_return == 0
    # Only the two tiles inferred can have been written (the second one's
    # write may be dropped if it had not started), each once.
    assert 1 <= len(writes.targets) == len(set(writes.targets)) <= 2
    assert set(writes.targets) <= set(_targets_in_order(runner, source, 32)[:2])


def test_cancellation_mid_image_stops_before_the_next_call(photo, tmp_path, monkeypatch):
    source = Plane.from_array(tmp_path / "in.raw", photo[:128, :160])
    runner = load_network("span-x2-ch48", NCNN)
    destination = tmp_path / "out.raw"
    writes = _Writes(monkeypatch, destination)
    calls = 0

    def on_call() -> None:
        nonlocal calls
        calls += 1

    with pytest.raises(CancelledError):
        upscale_plane(runner, source, destination, 32, on_call, should_cancel=lambda: calls >= 4)
    writes.returned = True
    assert calls == 4
    assert _helpers_alive() == []
    time.sleep(0.1)
    assert writes.after_return == 0
    assert 3 <= len(writes.targets) == len(set(writes.targets)) <= 4
    assert set(writes.targets) <= set(_targets_in_order(runner, source, 32)[:4])


class _OnGpu(Network):
    """Fake: no GPU can be provided here. A real network that says it runs
    on one, which is all the tiler asks of a GPU network."""

    backend = "ncnn"

    def __init__(self, inner: Network) -> None:
        super().__init__(inner.spec)
        self.inner = inner

    @property
    def device(self) -> str:
        return "a GPU (stand-in)"

    @property
    def on_gpu(self) -> bool:
        return True

    def _forward(
        self, chw: np.ndarray, blob: str, injected: Mapping[str, np.ndarray]
    ) -> np.ndarray:
        return self.inner._forward(chw, blob, injected)

    def release_memory(self) -> None:
        self.inner.release_memory()


@pytest.mark.parametrize("on_gpu", [True, False])
def test_every_tile_is_written_once_before_the_pass_returns(photo, tmp_path, monkeypatch, on_gpu):
    """On a GPU, writes overlap (the first one waits until a second one
    starts), never more than ``WRITES_IN_FLIGHT`` at once; on a CPU they go
    one at a time (the first one waits in vain). Either way each tile is
    written once, before the pass returns, and the output is the one of
    writes made in order: the tiles' targets do not overlap."""
    source = Plane.from_array(tmp_path / "in.raw", photo[:96, :128])
    cpu = load_network("span-x2-ch48", NCNN)
    runner = _OnGpu(cpu) if on_gpu else cpu
    serial = upscale_plane(cpu, source, tmp_path / "serial.raw", 32)
    destination = tmp_path / "out.raw"
    targets: list[tuple[int, int]] = []
    active = most_active = 0
    second_started = threading.Event()
    lock = threading.Lock()
    original = Plane.write

    def write(plane: Plane, x0: int, y0: int, data: np.ndarray) -> None:
        nonlocal active, most_active
        if plane.path == destination:
            with lock:
                first = not targets and active == 0
                active += 1
                most_active = max(most_active, active)
            if first:
                second_started.wait(5 if on_gpu else 0.3)
            else:
                second_started.set()
            with lock:
                targets.append((x0, y0))
                active -= 1
        original(plane, x0, y0, data)

    monkeypatch.setattr(Plane, "write", write)
    out = upscale_plane(runner, source, destination, 32)
    assert sorted(targets) == sorted(_targets_in_order(cpu, source, 32))
    if on_gpu:
        assert 2 <= most_active <= tiling.WRITES_IN_FLIGHT
    else:
        assert most_active == 1
    assert _helpers_alive() == []
    monkeypatch.undo()
    assert np.array_equal(out.read_all(), serial.read_all())


def test_a_write_failing_as_the_network_fails_is_logged_not_lost(
    photo, tmp_path, monkeypatch, caplog
):
    """On a GPU several writes are pending when the network fails: the
    network's error is the one raised, and a write that failed meanwhile
    (here: each write fails once the network has) is logged."""
    source = Plane.from_array(tmp_path / "in.raw", photo[:96, :128])
    failing = _FailsOnThirdCall(load_network("span-x2-ch48", NCNN))
    runner = _OnGpu(failing)
    destination = tmp_path / "out.raw"
    original = Plane.write

    def write(plane: Plane, x0: int, y0: int, data: np.ndarray) -> None:
        if plane.path == destination:
            deadline = time.monotonic() + 5
            while failing.calls < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.05)  # the network's error is raised meanwhile
            raise OSError(28, "No space left on device")
        original(plane, x0, y0, data)

    monkeypatch.setattr(Plane, "write", write)
    with caplog.at_level(logging.WARNING), pytest.raises(RuntimeError, match="third tile"):
        upscale_plane(runner, source, destination, 32)
    logged = [r.getMessage() for r in caplog.records if "tile write failed" in r.getMessage()]
    assert logged and all("No space left" in message for message in logged)
    assert _helpers_alive() == []


def test_a_failing_write_is_the_error_raised(photo, tmp_path, monkeypatch):
    """A write that fails (a full disk) stops the pass with its own error,
    not with a later one and not silently."""
    source = Plane.from_array(tmp_path / "in.raw", photo[:96, :128])
    runner = load_network("span-x2-ch48", NCNN)
    destination = tmp_path / "out.raw"
    original = Plane.write

    def write(plane: Plane, x0: int, y0: int, data: np.ndarray) -> None:
        if plane.path == destination:
            raise OSError(28, "No space left on device")
        original(plane, x0, y0, data)

    monkeypatch.setattr(Plane, "write", write)
    calls = 0

    def on_call() -> None:
        nonlocal calls
        calls += 1

    with pytest.raises(OSError, match="No space left"):
        upscale_plane(runner, source, destination, 32, on_call)
    assert _helpers_alive() == []
    # The first write's error surfaces by the next tile's call at the latest.
    assert calls <= 3


def test_a_single_tile_image_goes_through(photo, tmp_path):
    source = Plane.from_array(tmp_path / "in.raw", photo[:40, :40])
    runner = load_network("span-x2-ch48", NCNN)
    out = upscale_plane(runner, source, tmp_path / "out.raw", 64).read_all()
    np.testing.assert_array_equal(out, _serial(runner, source, 64))
    assert out.shape == (80, 80, 3)
