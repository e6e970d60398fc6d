"""OpenVINO against ncnn on real photos: the quality gate of issue #8.

Both backends tile the same crop the same way, so the comparison is of the
runtimes alone: fp32 must agree to >= 60 dB, the default precision (bf16 on
CPUs with AMX or AVX-512-BF16, fp32 elsewhere) to >= 45 dB. Tiling against
one untiled plain-ncnn call is checked on one network of each family.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.engine.memory import anonymous_mib
from tests.engine.reference import plain_ncnn, psnr
from upscayl_cloud.engine.backends import disk_cache
from upscayl_cloud.engine.backends import openvino as openvino_backend
from upscayl_cloud.engine.backends.disk_cache import prune
from upscayl_cloud.engine.backends.memory_keeper import MemoryKeeper
from upscayl_cloud.engine.backends.ncnn import NcnnNetwork
from upscayl_cloud.engine.backends.openvino import OpenVinoNetwork, native_bf16
from upscayl_cloud.engine.backends.width_costs import WidthCosts
from upscayl_cloud.engine.geometry import MIRRORED_EDGE, plan_tiles
from upscayl_cloud.engine.networks import NETWORKS
from upscayl_cloud.engine.options import EngineSettings
from upscayl_cloud.engine.planes import Plane, to_float
from upscayl_cloud.engine.runner import load_network
from upscayl_cloud.engine.tiling import tile_rule, upscale_plane

RRDB = {"realesrgan-x4plus", "realesrgan-x4plus-anime", "realsr-df2k-x4"}
NCNN = EngineSettings(threads=2, use_gpu=False, backend="ncnn")
OPENVINO = EngineSettings(threads=2, use_gpu=False, backend="openvino")
OPENVINO_FP32 = EngineSettings(threads=2, use_gpu=False, backend="openvino", precision="fp32")


@pytest.fixture(autouse=True)
def fresh_keeper(monkeypatch):
    """Each test starts with no compiled model kept warm by earlier ones, so
    memory measured here is this test's."""
    monkeypatch.setattr(openvino_backend, "_keeper", MemoryKeeper())


class _Counted(OpenVinoNetwork):
    """An OpenVINO network that counts its compilations (the real ones)."""

    compilations = 0

    def _compile(self, output, shapes):
        self.compilations += 1
        return super()._compile(output, shapes)


def _tiled(key: str, settings: EngineSettings, crop: np.ndarray, tmp_path: Path) -> np.ndarray:
    network = load_network(key, settings)
    source = Plane.from_array(tmp_path / f"{settings.backend}-in.raw", crop)
    out = upscale_plane(network, source, tmp_path / f"{settings.backend}-out.raw", 48)
    return to_float(out.read_all())


def _crop(photo: np.ndarray, key: str) -> np.ndarray:
    return photo[60:124, 120:184] if key in RRDB else photo[40:136, 100:196]


@pytest.fixture(scope="module")
def ncnn_outputs() -> dict[str, np.ndarray]:
    return {}


def _reference(key: str, photo: np.ndarray, tmp_path: Path, cache: dict) -> np.ndarray:
    if key not in cache:
        cache[key] = _tiled(key, NCNN, _crop(photo, key), tmp_path)
    return cache[key]


@pytest.mark.parametrize("key", sorted(NETWORKS))
def test_default_precision_stays_within_45_db_of_ncnn(key, photo, tmp_path, ncnn_outputs):
    expected = _reference(key, photo, tmp_path, ncnn_outputs)
    result = _tiled(key, OPENVINO, _crop(photo, key), tmp_path)
    assert load_network(key, OPENVINO).device.startswith(
        "CPU bf16" if native_bf16() else "CPU fp32"
    )
    assert result.shape == expected.shape
    assert psnr(result, expected) >= 45


@pytest.mark.parametrize("key", sorted(NETWORKS))
def test_fp32_equals_ncnn(key, photo, tmp_path, ncnn_outputs):
    expected = _reference(key, photo, tmp_path, ncnn_outputs)
    result = _tiled(key, OPENVINO_FP32, _crop(photo, key), tmp_path)
    assert psnr(result, expected) >= 60


@pytest.mark.parametrize(
    "key",
    [
        "realesrgan-x4plus-anime",
        "realesr-animevideov3-x2",
        "span-x4-ch48",
        "realcugan-se-up4x-conservative",
        "waifu2x-upconv7-photo-noise1-x2",
    ],
)
def test_tiles_still_match_the_untiled_network(key, photo, tmp_path):
    """The engine issue's tiling guarantee, on OpenVINO fp32: compact and
    unpadded networks within 2/255, RRDB and Real-CUGAN >= 42 dB."""
    crop = _crop(photo, key)
    tiled = _tiled(key, OPENVINO_FP32, crop, tmp_path)
    reference = plain_ncnn(key, crop)
    if key in RRDB or NETWORKS[key].global_pools:
        assert psnr(tiled, reference) >= 42
    else:
        assert np.abs(np.round(tiled * 255) - np.round(reference * 255)).max() <= 2


class _SlowAt135(OpenVinoNetwork):
    """Stands in for a machine where 135 columns is one of OpenVINO's slow
    widths: which widths are slow depends on the CPU, so no width is slow
    on every machine the tests run on."""

    @property
    def width_timings(self):
        return WidthCosts(lambda width: 3e-6 if width == 135 else 1e-6)


@pytest.mark.parametrize("key", ["realesr-animevideov3-x2", "span-x2-ch48"])
def test_an_image_one_slow_tile_wide_runs_as_two_tiles_and_still_matches(key, photo, tmp_path):
    """An image one tile wide at a slow width is cut in two ordinary ones;
    the tiling guarantee (2/255 of one untiled call) still holds."""
    network = _SlowAt135(NETWORKS[key], threads=2, precision="fp32")
    crop = photo[:256, 60:195]
    tiles = plan_tiles(135, 256, 512, tile_rule(network))
    assert len(tiles) == 2 and tiles[0].source.width != 135
    source = Plane.from_array(tmp_path / "in.raw", crop)
    tiled = to_float(upscale_plane(network, source, tmp_path / "out.raw", 512).read_all())
    reference = plain_ncnn(key, crop)
    assert np.abs(np.round(tiled * 255) - np.round(reference * 255)).max() <= 2


def test_widths_are_timed_on_the_dynamic_compilation_once():
    """The real probe: short calls on the one dynamic compilation, kept for
    the process, and not counted toward any shape's static compilation."""
    network = _Counted(NETWORKS["span-x2-ch48"], threads=2)
    timings = network.width_timings
    assert timings.known(300) == 1.0 and network.compilations == 0
    first = timings.relative(300)
    assert 0 < first < 100
    assert timings.relative(300) == timings.known(300) == first
    assert network.compilations == network.compiled_count == 1
    assert not network._dynamic_s
    assert OpenVinoNetwork(NETWORKS["realesrgan-x4plus"], threads=2).width_timings is None


def test_width_timings_outlive_the_process_in_the_cache_folder(tmp_path):
    """Another network object on the same cache folder (a restarted worker)
    reads the timing: no compilation, no probe; pruning the folder's
    compiled blobs leaves the timings."""
    spec = NETWORKS["span-x2-ch48"]
    first = OpenVinoNetwork(spec, threads=2, cache_dir=tmp_path).width_timings.relative(300)
    prune(tmp_path, 0)
    (timings,) = (tmp_path / "widths").iterdir()
    assert spec.key in timings.name
    again = _Counted(spec, threads=2, cache_dir=tmp_path)
    assert again.width_timings.relative(300) == pytest.approx(first, abs=1e-3)
    assert again.compilations == 0
    other_threads = _Counted(spec, threads=1, cache_dir=tmp_path)
    other_threads.width_timings.relative(300)  # timings depend on the thread count
    assert other_threads.compilations == 1
    assert len(list((tmp_path / "widths").iterdir())) == 2


def test_a_many_tile_image_costs_two_compilations_per_graph(photo, tmp_path):
    """Every tile of an image has one shape: its first tile runs on the
    dynamic compilation, the others (here from the second call on) on one
    static compilation of that shape (Real-CUGAN: per global-mean stage,
    plus the final run). A second image of the same size compiles nothing."""
    for key, graphs in (("realesr-animevideov3-x2", 1), ("realcugan-se-up2x-conservative", 5)):
        network = _Counted(NETWORKS[key], threads=2, static_after=0)
        source = Plane.from_array(tmp_path / f"{key}.raw", photo[:150, :170])
        upscale_plane(network, source, tmp_path / f"{key}-out.raw", 40)
        assert network.compiled_count == network.compilations == 2 * graphs
        upscale_plane(network, source, tmp_path / f"{key}-again.raw", 40)
        assert network.compilations == 2 * graphs


class _StaticFails(_Counted):
    """Stands in for a static compilation that fails (out of memory, or an
    OpenVINO bug for one shape), which no input provokes reliably."""

    def _compile(self, output, shapes):
        if not openvino_backend._is_dynamic(shapes):
            self.compilations += 1
            raise RuntimeError("stand-in: static compilation failed")
        return super()._compile(output, shapes)


def test_a_failed_static_compilation_leaves_the_shape_dynamic(photo, tmp_path):
    """A static compilation is an optimisation: when it fails, the image
    still comes out (as it does without one), and it is not tried again."""
    key = "realesr-animevideov3-x2"
    source = Plane.from_array(tmp_path / "in.raw", photo[:150, :170])
    failing = _StaticFails(NETWORKS[key], threads=2, static_after=0)
    got = upscale_plane(failing, source, tmp_path / "failing.raw", 40).read_all()
    upscale_plane(failing, source, tmp_path / "again.raw", 40)
    assert failing.compilations == 2  # the dynamic one, and one static try
    assert failing.compiled_count == 1
    plain = OpenVinoNetwork(NETWORKS[key], threads=2, static_after=1e9)  # never static
    expected = upscale_plane(plain, source, tmp_path / "plain.raw", 40).read_all()
    assert np.array_equal(got, expected)


def test_images_of_new_sizes_share_one_compilation(photo, tmp_path):
    """A service sees most sizes once; compiling each (1.1-1.7 s for the
    RRDB networks) cost as much as running a small image. Single-tile images
    of three sizes run on the one dynamic compilation, with the results of a
    static compilation of each size."""
    network = OpenVinoNetwork(NETWORKS["span-x2-ch48"], threads=2, static_after=0)
    crops = [np.ascontiguousarray(photo[:h, :w].transpose(2, 0, 1)) for h, w in SIZES]
    dynamic = [network.run(chw) for chw in crops]
    assert network.compiled_count == 1
    static = [network.run(chw) for chw in crops]  # each size's second call
    assert network.compiled_count == 1 + len(SIZES)
    for a, b in zip(dynamic, static, strict=True):
        assert psnr(a, b) >= 45


SIZES = ((40, 48), (56, 44), (64, 64))


@pytest.mark.parametrize("key", sorted(NETWORKS))
def test_static_and_dynamic_compilations_are_equally_faithful(key, photo):
    """Which one runs a call depends on timing, and the gates above mostly
    see the dynamic one: both must be as close to ncnn as each other
    (measured on AMX: within 0.3 dB, 5/255 apart at most, Real-CUGAN pro;
    on AVX-512-BF16 without AMX, 2026-11-29: within 1.04 dB, Real-CUGAN se
    4x denoise3x at 56.2 and 55.1 dB, every other network within 0.5 dB)."""
    spec = NETWORKS[key]
    network = OpenVinoNetwork(spec, threads=2, static_after=0)
    edge = (32 if key in RRDB else 48) + 2 * spec.context
    chw = np.ascontiguousarray(photo[40 : 40 + edge, 100 : 100 + edge].transpose(2, 0, 1))
    dynamic, static = network.run(chw), network.run(chw)
    assert network.compiled_count == 2
    reference = NcnnNetwork(spec, threads=2, use_gpu=False).run(chw)
    assert psnr(static, dynamic) >= 50
    assert min(psnr(dynamic, reference), psnr(static, reference)) >= 45
    assert abs(psnr(dynamic, reference) - psnr(static, reference)) <= 1.5


def test_the_rule_weighs_dynamic_running_time_against_the_compilation():
    """The decision itself, on recorded times: static from exactly
    ``static_after`` x the dynamic compilation's seconds."""
    spec = NETWORKS["span-x2-ch48"]
    network = OpenVinoNetwork(spec, threads=2, static_after=10)
    shapes = ((spec.input_blob, (1, 3, 40, 48)),)
    network._compile_s[(spec.output_blob, ())] = 0.2
    network._dynamic_s[(spec.output_blob, shapes)] = 1.99
    assert network._run_shapes(spec.output_blob, shapes) == ((spec.input_blob, (1, 3, -1, -1)),)
    network._dynamic_s[(spec.output_blob, shapes)] = 2.0
    assert network._run_shapes(spec.output_blob, shapes) == shapes


@pytest.mark.parametrize(("static_after", "compiled"), [(1e-9, 2), (1e9, 1)])
def test_a_shape_turns_static_once_its_dynamic_runs_outweigh_a_compilation(
    static_after, compiled, photo
):
    """The ski-rental rule: a shape keeps running on the dynamic compilation
    until the time it has spent there reaches ``static_after`` times the
    dynamic compilation's; the default (10) is the inverse of the ~10 %
    that static shapes gain (bench/shape_buckets.py)."""
    network = OpenVinoNetwork(NETWORKS["span-x2-ch48"], threads=2, static_after=static_after)
    chw = np.ascontiguousarray(photo[:40, :48].transpose(2, 0, 1))
    for _ in range(4):
        network.run(chw)
    assert network.compiled_count == compiled


def test_compiled_networks_are_kept_on_disk(photo, tmp_path):
    cache = tmp_path / "cache"
    network = OpenVinoNetwork(NETWORKS["span-x2-ch48"], threads=2, cache_dir=cache)
    network.run(np.ascontiguousarray(photo[:40, :48].transpose(2, 0, 1)))
    blobs = sorted(cache.glob("*.blob"))
    assert blobs and all(blob.stat().st_size > 100_000 for blob in blobs)
    again = OpenVinoNetwork(NETWORKS["span-x2-ch48"], threads=2, cache_dir=cache)
    again.run(np.ascontiguousarray(photo[:40, :48].transpose(2, 0, 1)))
    assert sorted(cache.glob("*.blob")) == blobs  # loaded, not compiled anew


def test_concurrent_callers_get_their_own_streams_and_the_same_results(photo):
    """Workers share one network; with ``concurrency`` streams their calls
    run side by side instead of queueing, and each gets its own answer."""
    from concurrent.futures import ThreadPoolExecutor

    settings = EngineSettings(threads=1, concurrency=2, use_gpu=False, backend="openvino")
    assert load_network("span-x2-ch48", settings).device.endswith("x 2 streams")
    network = OpenVinoNetwork(NETWORKS["span-x2-ch48"], threads=1, streams=2, static_after=0)
    inputs = [np.ascontiguousarray(photo[y : y + 48, :64].transpose(2, 0, 1)) for y in (0, 100)]
    network.run(inputs[0])  # the shape's first call runs on the dynamic compilation
    alone = [network.run(chw) for chw in inputs]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(network.run, inputs))
    assert all(np.array_equal(a, b) for a, b in zip(alone, together, strict=True))
    assert not np.array_equal(together[0], together[1])


def test_a_truncated_cache_file_is_compiled_again(photo, tmp_path):
    """A worker killed while OpenVINO wrote its cache leaves half a blob; the
    next load must compile afresh, not fail or run garbage."""
    cache = tmp_path / "cache"
    chw = np.ascontiguousarray(photo[:40, :48].transpose(2, 0, 1))
    first = OpenVinoNetwork(NETWORKS["span-x2-ch48"], threads=2, cache_dir=cache).run(chw)
    (blob,) = cache.glob("*.blob")
    whole = blob.stat().st_size
    blob.write_bytes(blob.read_bytes()[: whole // 3])
    again = OpenVinoNetwork(NETWORKS["span-x2-ch48"], threads=2, cache_dir=cache).run(chw)
    assert np.array_equal(first, again)
    assert blob.stat().st_size >= whole  # rewritten whole


def _pass(network: OpenVinoNetwork, photo: np.ndarray, edge: int, folder: Path) -> None:
    source = Plane.from_array(folder / f"in-{edge}.raw", photo[:edge, :edge])
    upscale_plane(network, source, folder / "out.raw", 512)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_passes_hand_their_working_memory_back(photo, tmp_path):
    """OpenVINO keeps each compiled model's peak working memory (per stream)
    until told, and glibc keeps what it is given back: with no room to keep
    any (a 1 MiB budget), six image sizes on the dynamic compilation leave
    its weights and little else (measured: 140 MiB; 630 MiB without
    trimming the heap, 710 MiB for three static sizes without the release)."""
    network = OpenVinoNetwork(
        NETWORKS["realesrgan-x4plus-anime"], threads=2, streams=2, keep_memory_mb=1
    )
    before = anonymous_mib()
    for edge in (256, 200, 160, 240, 180, 220):
        _pass(network, photo, edge, tmp_path)
    assert network.compiled_count == 1  # each size ran once: the dynamic compilation
    assert network.holding_memory == 0
    assert anonymous_mib() - before < 300


def test_recent_models_keep_their_memory_for_the_next_pass(photo, tmp_path):
    """Releasing every model after every pass made the next pass allocate
    its buffers again (0.03-0.2 s: a fifth of waifu2x's time on a small
    image). Within the budget, the worker's recent models keep them, across
    shapes and networks."""
    first = OpenVinoNetwork(NETWORKS["span-x2-ch48"], threads=2, static_after=0)
    second = OpenVinoNetwork(NETWORKS["realesr-animevideov3-x2"], threads=2)
    _pass(first, photo, 64, tmp_path)  # dynamic
    _pass(first, photo, 64, tmp_path)  # static, compiled for its second call
    assert (first.compiled_count, first.holding_memory) == (2, 2)
    _pass(first, photo, 48, tmp_path)  # dynamic again
    _pass(second, photo, 64, tmp_path)
    assert (first.holding_memory, second.holding_memory) == (2, 1)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_an_older_model_frees_its_memory_when_a_newer_one_needs_the_room(photo, tmp_path):
    """The budget bounds real memory: a large network's kept peak is freed
    before a second network runs, when both would not fit (measured: 300 ->
    151 MiB of anonymous memory)."""
    large_spec = NETWORKS["realesrgan-x4plus-anime"]
    # Room for the large network's pass over a 200x200 crop alone (its source
    # is the crop and its mirrored edges), not beside another.
    side = 200 + 2 * MIRRORED_EDGE
    budget_mb = side * side * large_spec.openvino_kib_per_pixel // 1024 + 1
    large = OpenVinoNetwork(large_spec, threads=2, keep_memory_mb=budget_mb)
    small = OpenVinoNetwork(NETWORKS["span-x2-ch48"], threads=2, keep_memory_mb=budget_mb)
    _pass(large, photo, 200, tmp_path)
    assert large.holding_memory == 1
    holding = anonymous_mib()
    _pass(small, photo, 48, tmp_path)
    assert (large.holding_memory, small.holding_memory) == (0, 1)
    assert holding - anonymous_mib() > 60


_COMPILE_IN_A_PROCESS = """
import sys
import numpy as np
from pathlib import Path
from upscayl_cloud.engine.backends.openvino import OpenVinoNetwork
from upscayl_cloud.engine.networks import NETWORKS
chw = np.random.default_rng(0).random((3, 16, 16), dtype=np.float32)
network = NETWORKS["realesr-animevideov3-x2"]
OpenVinoNetwork(network, threads=1, cache_dir=Path(sys.argv[1])).run(chw)
"""


def test_workers_starting_together_share_the_cache_folder(tmp_path):
    """Three processes compiling the same shape into one fresh cache folder:
    without the folder's lock, one sometimes died of SIGBUS, loading a blob
    another was still writing (2 of 24 processes when measured)."""
    import subprocess
    import sys

    for round_ in range(4):
        cache = tmp_path / f"cache-{round_}"
        processes = [
            subprocess.Popen([sys.executable, "-c", _COMPILE_IN_A_PROCESS, str(cache)])
            for _ in range(3)
        ]
        assert [process.wait(timeout=120) for process in processes] == [0, 0, 0]
        assert (cache / ".lock").exists() and list(cache.glob("*.blob"))


def test_importing_openvino_sends_and_stores_nothing(tmp_path: Path) -> None:
    """OpenVINO's tools send a usage event to Google Analytics on import
    unless opted out in the home folder (and keep a client id and counts
    there): a service must do neither."""
    script = (
        "from upscayl_cloud.engine.backends import openvino\n"
        "import openvino.tools.ovc.telemetry_utils as t\n"
        "print(t.tm.__name__)\n"
    )
    home = tmp_path / "home"
    home.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "HOME": str(home), "CI": ""},
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert done.stdout.strip().endswith("telemetry_stub")
    assert list(home.iterdir()) == []


def _tiny_png(photo: np.ndarray, path: Path) -> Path:
    import pyvips

    pixels = np.round(photo[120:136, 220:240] * 255).astype(np.uint8)
    pyvips.Image.new_from_array(pixels).write_to_file(str(path))
    return path


def _cache_warnings(caplog, folder: Path) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelno == logging.WARNING and str(folder) in record.getMessage()
    ]


def test_a_cache_folder_that_cannot_be_made_costs_only_the_cache(photo, tmp_path, caplog):
    """``models tune`` run by root, a read-only mount: a cache folder that
    cannot be created failed every OpenVINO task with an internal error.
    Here its parent is a file (no one, root included, can make it): the
    upscale runs without the cache, as it would with none, warned once."""
    from upscayl_cloud.engine.options import UpscaleRequest
    from upscayl_cloud.engine.pipeline import upscale_file

    (tmp_path / "not-a-folder").write_bytes(b"")
    cache_dir = tmp_path / "not-a-folder" / "cache"
    source = _tiny_png(photo, tmp_path / "in.png")
    request = UpscaleRequest("quick-clear-4x", 4, "png")
    settings = EngineSettings(threads=1, use_gpu=False, backend="openvino", cache_dir=cache_dir)
    uncached = EngineSettings(threads=1, use_gpu=False, backend="openvino")
    with caplog.at_level(logging.WARNING):
        upscale_file(source, tmp_path / "cached.png", request, settings=settings)
        # Another compilation on the same folder: no second warning.
        OpenVinoNetwork(NETWORKS["span-x2-ch48"], threads=1, cache_dir=cache_dir / "openvino").run(
            np.ascontiguousarray(photo[:16, :16].transpose(2, 0, 1))
        )
    upscale_file(source, tmp_path / "plain.png", request, settings=uncached)
    assert (tmp_path / "cached.png").read_bytes() == (tmp_path / "plain.png").read_bytes()
    (warning,) = _cache_warnings(caplog, cache_dir / "openvino")
    assert "Not a directory" in warning


def test_a_cache_lock_that_cannot_be_opened_costs_only_the_cache(photo, tmp_path, caplog):
    """The folder's lock cannot be opened (here a folder stands at its name;
    another account's lock file fails the same way): compilations go on
    without the cache, warned once, and write nothing into it."""
    cache = tmp_path / "cache"
    (cache / ".lock").mkdir(parents=True)
    chw = np.ascontiguousarray(photo[:16, :16].transpose(2, 0, 1))
    plain = OpenVinoNetwork(NETWORKS["span-x2-ch48"], threads=1).run(chw)
    with caplog.at_level(logging.WARNING):
        first = OpenVinoNetwork(NETWORKS["span-x2-ch48"], threads=1, cache_dir=cache).run(chw)
        again = OpenVinoNetwork(NETWORKS["span-x2-ch48"], threads=1, cache_dir=cache).run(chw)
    assert np.array_equal(first, plain) and np.array_equal(again, plain)
    (warning,) = _cache_warnings(caplog, cache)
    assert "Is a directory" in warning
    assert [path.name for path in cache.iterdir()] == [".lock"]


_SPAN_IN_A_PROCESS = """
import sys
import numpy as np
from pathlib import Path
from upscayl_cloud.engine.backends.openvino import OpenVinoNetwork
from upscayl_cloud.engine.networks import NETWORKS
chw = np.random.default_rng(0).random((3, 16, 16), dtype=np.float32)
out = OpenVinoNetwork(NETWORKS["span-x2-ch48"], threads=1, cache_dir=Path(sys.argv[1])).run(chw)
np.save(sys.argv[2], out)
"""


def _span_run(cache: Path) -> np.ndarray:
    """SPAN on a small fixed input, in this process."""
    chw = np.random.default_rng(0).random((3, 16, 16), dtype=np.float32)
    return OpenVinoNetwork(NETWORKS["span-x2-ch48"], threads=1, cache_dir=cache).run(chw)


def _span_run_in_a_process(cache: Path) -> np.ndarray:
    """The same in a new process: one that has checked no blob yet."""
    out = cache.parent / "out.npy"
    subprocess.run(
        [sys.executable, "-c", _SPAN_IN_A_PROCESS, str(cache), str(out)], check=True, timeout=120
    )
    return np.load(out)


def test_a_blob_damaged_at_its_full_size_is_compiled_again(tmp_path):
    """A blob whose middle was zeroed, its size and time unchanged (what a
    crash leaves when the size reached the disk and the data did not),
    loaded without complaint and made a garbage image. Its checksum no
    longer matches: a new process deletes it and compiles again."""
    cache = tmp_path / "cache"
    first = _span_run(cache)
    (blob,) = cache.glob("*.blob")
    stat = blob.stat()
    data = bytearray(blob.read_bytes())
    start, end = len(data) // 4, 3 * len(data) // 4
    data[start:end] = bytes(end - start)
    blob.chmod(0o644)  # OpenVINO writes it read-only
    blob.write_bytes(data)
    os.utime(blob, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert blob.stat().st_size == stat.st_size
    assert np.array_equal(_span_run_in_a_process(cache), first)
    assert blob.read_bytes() != data  # written anew, with its checksum
    assert (cache / f".{blob.name}.sha256").exists()


def test_a_blob_without_a_checksum_is_compiled_again(tmp_path):
    """Blobs of an older version, or of a process that died before writing
    the checksum, cannot be told whole: they are deleted, and compiled anew."""
    cache = tmp_path / "cache"
    first = _span_run(cache)
    (blob,) = cache.glob("*.blob")
    written = blob.stat().st_mtime_ns
    (checksum,) = cache.glob(".*.sha256")
    checksum.unlink()
    (cache / ".gone.blob.sha256").write_text("0\n")  # its blob was deleted by hand
    assert np.array_equal(_span_run_in_a_process(cache), first)
    assert blob.stat().st_mtime_ns != written  # compiled anew, not loaded
    assert [path.name for path in cache.glob(".*.sha256")] == [checksum.name]


def test_a_blob_is_read_for_its_checksum_once_per_process(tmp_path, monkeypatch):
    """Every compilation checks the folder; a blob already found whole (same
    size, time and inode) is not read again: hashing runs at about 1 GB/s."""
    digests: list[Path] = []
    digest = disk_cache._digest
    monkeypatch.setattr(disk_cache, "_digest", lambda path: digests.append(path) or digest(path))
    cache = tmp_path / "cache"
    _span_run(cache)  # writes the blob and its checksum: one read
    _span_run(cache)
    chw = np.random.default_rng(1).random((3, 8, 24), dtype=np.float32)
    OpenVinoNetwork(NETWORKS["span-x2-ch48"], threads=1, cache_dir=cache).run(chw)  # same blob
    assert len(list(cache.glob("*.blob"))) == 1
    assert len(digests) == 1


@pytest.mark.skipif(shutil.which("chattr") is None, reason="needs chattr")
def test_a_cache_folder_that_cannot_be_changed_costs_only_the_cache(tmp_path, caplog):
    """A folder where nothing can be deleted or added (a read-only mount;
    here an immutable folder, which binds root too), holding a blob that
    has no checksum: it can be neither trusted nor deleted, so compilations
    run without the folder, warned once."""
    cache = tmp_path / "cache"
    first = _span_run_in_a_process(cache)
    for checksum in cache.glob(".*.sha256"):
        checksum.unlink()
    if subprocess.run(["chattr", "+i", str(cache)], capture_output=True).returncode:
        pytest.skip("this filesystem or account cannot make a folder immutable")
    try:
        with caplog.at_level(logging.WARNING):
            assert np.array_equal(_span_run(cache), first)
            assert np.array_equal(_span_run(cache), first)
    finally:
        subprocess.run(["chattr", "-i", str(cache)], check=True)
    (warning,) = _cache_warnings(caplog, cache)
    assert "cannot be used" in warning and "Operation not permitted" in warning
