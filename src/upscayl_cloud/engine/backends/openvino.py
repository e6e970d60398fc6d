"""OpenVINO on the CPU: bf16 on AMX / AVX-512-BF16 machines, fp32 elsewhere.

OpenVINO's CPU plugin runs convolutions in bf16 by default wherever the CPU
has bf16 instructions, which is what makes it several times faster than
ncnn's fp32 there (bench/README.md); ``precision="fp32"`` turns that off.

Every size runs first on one compilation with dynamic height and width,
shared by all sizes. Static shapes run 0-15 % faster (about a tenth; RRDB
networks gain most), but a compilation costs 0.05-0.2 s for the compact
networks and 1.1-1.7 s for the RRDB ones, as much as running a small image,
and a service sees images of every size, most of them once
(bench/shape_buckets.py, bench/distinct_sizes.py). So a shape gets a static
compilation of its own only once it has run dynamically for ``static_after``
(10) times as long as the dynamic compilation took: the ski-rental rule,
which never spends more than about twice the better choice in hindsight. A
many-tile image of an RRDB network turns static after its first tile; a
batch of small same-size images after a few images. Which compilation runs
a call thus depends on timing, and bf16 rounds differently in the two: the
same input may come out a few levels apart from one run to the next
(identical for the RRDB networks, AnimeVideo v3 and waifu2x; up to 2/255
for SPAN, 5/255 for Real-CUGAN pro), both equally close to ncnn (within
0.3 dB; tests/engine/backends/test_openvino.py).
Compiled models are kept in a small in-process cache and, with a cache
folder, on disk (OpenVINO's ``CACHE_DIR``), which turns a 1.7 s
compilation of realesrgan-x4plus into a 0.4 s load; the folder is pruned to
a size limit, its blobs are checked against checksums before one may load,
and a folder that cannot be used only costs the compilations
(``disk_cache``).
OpenVINO keeps each compiled model's peak working memory, per stream, until
told to release it; a worker thread's most recently used models keep it
within one tile budget, and older ones hand it back (``memory_keeper``).
Its bf16 convolutions run about one input width in five of the compact
padded networks several times slower than the widths beside them; for
those networks each width is timed against its neighbours once, with
short calls on the dynamic compilation, and the tiles step around the slow
ones (``width_costs``).
"""

from __future__ import annotations

import hashlib
import io
import logging
import platform
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from contextlib import nullcontext
from functools import cache
from pathlib import Path

import numpy as np
import openvino as ov

from upscayl_cloud.engine.backends.base import Network, cpu_device
from upscayl_cloud.engine.backends.disk_cache import compiling
from upscayl_cloud.engine.backends.heap import return_freed_memory
from upscayl_cloud.engine.backends.memory_keeper import MemoryKeeper
from upscayl_cloud.engine.backends.onnx_models import onnx_bytes, onnx_feeds
from upscayl_cloud.engine.backends.width_costs import WidthCosts
from upscayl_cloud.engine.networks import NetworkSpec

log = logging.getLogger(__name__)

#: Compiled models kept per network: a dynamic one and a static one per
#: graph for a many-tile image (Real-CUGAN's tiles use five graphs: four
#: global-mean stages and the final run). Each holds its own copy of the
#: weights (realesrgan-x4plus: ~33 MB in bf16).
_COMPILED_PER_NETWORK = 10

#: Shapes whose dynamic running time is counted, most recent first.
_COUNTED_SHAPES = 256

#: Rows of the short call that times a width: from 12 rows on, the same
#: widths come out slow as at 200 (at 8, half of SPAN's are missed); about
#: 8 ms plus the rows' work (bench/width_cliffs.py --sweep).
_PROBE_ROWS = 16

_Shapes = tuple[tuple[str, tuple[int, ...]], ...]


def _is_dynamic(shapes: _Shapes) -> bool:
    return any(-1 in shape for _, shape in shapes)


def _cut(shapes: _Shapes, input_blob: str, output: str) -> tuple[str, tuple[str, ...]]:
    """A graph cut: its output and its injected inputs, whatever the shapes."""
    return output, tuple(name for name, _ in shapes if name != input_blob)


@cache
def core() -> ov.Core:
    """One core for the process. The cache folder is given per compilation
    instead (``CACHE_DIR`` in its settings), so one whose folder cannot be
    used at that moment runs without it."""
    return ov.Core()


@cache
def _cpu_model() -> str:
    """The CPU's model name (Linux), else what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def native_bf16() -> bool:
    """True where OpenVINO runs bf16 by default (AMX or AVX-512-BF16)."""
    return core().get_property("CPU", "INFERENCE_PRECISION_HINT") == ov.Type.bf16


class _Entry:
    """One compiled model, its callers' requests and whether one is running."""

    def __init__(self, lock: threading.Lock) -> None:
        #: The owning network's lock, which guards ``requests``, ``in_flight``
        #: and ``kib``.
        self.lock = lock
        #: Working memory held, estimated like the tile size's: the largest
        #: call since the last release (a dynamic model's calls differ).
        self.kib = 0
        self.ready = threading.Event()
        self.compiled: ov.CompiledModel | None = None
        self.error: BaseException | None = None
        #: One request per calling thread: a request stays on one stream, so a
        #: worker's calls never spread working memory over every stream.
        self.requests: dict[int, ov.InferRequest] = {}
        self.in_flight = 0

    def release_if_idle(self) -> bool:
        """Hand back the working memory unless a call is running; the weights
        stay, so the next call needs no compilation."""
        with self.lock:
            if self.compiled is None or self.in_flight:
                return False
            self.compiled.release_memory()
            self.kib = 0
            return True


#: Shared by every network of the process: the budget is per worker thread.
_keeper = MemoryKeeper()


class OpenVinoNetwork(Network):
    backend = "openvino"

    def __init__(
        self,
        spec: NetworkSpec,
        threads: int,
        precision: str = "auto",
        cache_dir: Path | None = None,
        cache_max_mb: int = 4096,
        streams: int = 1,
        keep_memory_mb: int = 3072,
        static_after: float = 10.0,
    ) -> None:
        super().__init__(spec)
        self._threads = threads
        self._streams = max(1, streams)
        self._fp32 = precision == "fp32"
        self._cache_dir = cache_dir
        self._cache_max_mb = cache_max_mb
        self._keep_kib = keep_memory_mb * 1024
        #: A shape gets a static compilation once it has run dynamically
        #: this many times as long as its graph's dynamic compilation took
        #: (0: from its second call on).
        self._static_after = static_after
        self._core = core()
        self._lock = threading.Lock()
        self._models: dict[tuple[str, tuple[str, ...]], ov.Model] = {}
        self._entries: OrderedDict[tuple[str, _Shapes], _Entry] = OrderedDict()
        #: Seconds each (cut, shape) has run on a dynamic compilation.
        self._dynamic_s: OrderedDict[tuple[str, _Shapes], float] = OrderedDict()
        #: Seconds each cut's dynamic compilation took.
        self._compile_s: dict[tuple[str, tuple[str, ...]], float] = {}
        #: (cut output, shapes) whose static compilation failed: they stay
        #: dynamic instead of failing again on every call.
        self._static_failed: set[tuple[str, _Shapes]] = set()
        self._width_costs = (
            WidthCosts(self._time_per_pixel, self._widths_file())
            if spec.openvino_width_cliffs
            else None
        )

    @property
    def device(self) -> str:
        precision = "fp32" if self._fp32 or not native_bf16() else "bf16"
        return cpu_device(precision, self._threads, self._streams)

    @property
    def kib_per_pixel(self) -> int:
        return self.spec.openvino_kib_per_pixel

    @property
    def width_timings(self) -> WidthCosts | None:
        return self._width_costs

    def _widths_file(self) -> Path | None:
        """Where this network's width timings are kept: the cache folder,
        under a name for everything they depend on (the CPU, OpenVINO's
        version, the precision, threads and streams)."""
        if self._cache_dir is None:
            return None
        tag = hashlib.sha256(f"{_cpu_model()}|{ov.__version__}|{self.device}".encode())
        return self._cache_dir / "widths" / f"{self.spec.key}-{tag.hexdigest()[:16]}.json"

    def _time_per_pixel(self, width: int) -> float:
        """Seconds per pixel of one short call ``width`` pixels wide, on the
        dynamic compilation (the cliffs are the same on a static one)."""
        chw = np.zeros((3, _PROBE_ROWS, width), dtype=np.float32)
        start = time.perf_counter()
        self._forward(chw, self.spec.output_blob, {}, count=False)
        return (time.perf_counter() - start) / (_PROBE_ROWS * width)

    @property
    def compiled_count(self) -> int:
        """Compiled models held now: the dynamic one and the static shapes,
        per graph cut."""
        with self._lock:
            return sum(entry.compiled is not None for entry in self._entries.values())

    @property
    def holding_memory(self) -> int:
        """Compiled models of this network holding working memory now."""
        with self._lock:
            entries = list(self._entries.values())
        return _keeper.holding(entries)

    def release_memory(self) -> None:
        """End of a pass: this thread's models hand back what no longer fits
        its budget (``memory_keeper``); the rest starts the next pass warm."""
        _keeper.trim(self._keep_kib)
        return_freed_memory()

    def _forward(
        self, chw: np.ndarray, blob: str, injected: Mapping[str, np.ndarray], count: bool = True
    ) -> np.ndarray:
        """``count``: the call's time counts toward a static compilation of
        its shape (not for a width's probe, a shape no image has)."""
        feeds = onnx_feeds(self.spec.input_blob, chw, injected)
        shapes = tuple(sorted((name, array.shape) for name, array in feeds.items()))
        run_shapes = self._run_shapes(blob, shapes)
        kib = chw.shape[1] * chw.shape[2] * self.kib_per_pixel
        try:
            entry = self._entry(blob, run_shapes, kib)  # in flight from here on
        except Exception:
            if _is_dynamic(run_shapes):
                raise
            # A static compilation is only an optimisation: the dynamic one
            # already ran this shape, so the call goes on there, for good.
            log.warning("static compilation of %s failed; it stays dynamic", dict(shapes))
            with self._lock:
                self._static_failed.add((blob, shapes))
            run_shapes = self._dynamic(shapes)
            entry = self._entry(blob, run_shapes, kib)
        try:
            _keeper.make_room(entry, self._keep_kib)
            thread = threading.get_ident()
            with self._lock:
                request = entry.requests.get(thread)
                if request is None:
                    request = entry.requests[thread] = entry.compiled.create_infer_request()
            start = time.perf_counter()
            request.infer(feeds)
            if count and run_shapes != shapes:
                self._ran_dynamically(blob, shapes, time.perf_counter() - start)
            return np.array(request.get_output_tensor(0).data[0], copy=True)
        finally:
            _keeper.used(entry)
            with self._lock:
                entry.in_flight -= 1

    def _run_shapes(self, output: str, shapes: _Shapes) -> _Shapes:
        """The shapes to compile for: the call's own where that compilation
        exists or has earned its cost (see the module's docstring), else
        the dynamic ones."""
        key = (output, shapes)
        with self._lock:
            ran = self._dynamic_s.get(key, 0.0)
            compile_s = self._compile_s.get(_cut(shapes, self.spec.input_blob, output), 0.0)
            earned = ran > 0 and ran >= self._static_after * compile_s
            if key in self._entries or (earned and key not in self._static_failed):
                return shapes
        return self._dynamic(shapes)

    def _dynamic(self, shapes: _Shapes) -> _Shapes:
        """The shapes with the input's height and width left open."""
        return tuple(
            (name, (*shape[:2], -1, -1) if name == self.spec.input_blob else shape)
            for name, shape in shapes
        )

    def _ran_dynamically(self, output: str, shapes: _Shapes, seconds: float) -> None:
        key = (output, shapes)
        with self._lock:
            self._dynamic_s[key] = self._dynamic_s.pop(key, 0.0) + seconds
            while len(self._dynamic_s) > _COUNTED_SHAPES:
                self._dynamic_s.popitem(last=False)

    def _entry(self, output: str, shapes: _Shapes, kib: int) -> _Entry:
        """The compiled model for this cut and shape, already counted as in
        flight (so neither eviction nor a release can touch it before the
        call) and sized for a call of ``kib``. Compiled by the first caller
        that needs it, outside the lock, so callers of other shapes are not
        held up by a compilation of seconds."""
        key = (output, shapes)
        with self._lock:
            entry = self._entries.get(key)
            owner = entry is None
            if owner:
                entry = self._entries[key] = _Entry(self._lock)
            self._entries.move_to_end(key)
            entry.in_flight += 1
            entry.kib = max(entry.kib, kib)
        try:
            if owner:
                try:
                    entry.compiled = self._compile(output, shapes)
                except BaseException as exc:
                    entry.error = exc
                    with self._lock:
                        self._entries.pop(key, None)
                    raise
                finally:
                    entry.ready.set()
                self._evict()
            entry.ready.wait()
            if entry.error is not None:
                raise RuntimeError(f"OpenVINO could not compile {self.spec.key}") from entry.error
        except BaseException:
            with self._lock:
                entry.in_flight -= 1
            raise
        return entry

    def _evict(self) -> None:
        """Drop the least recently used idle compilations beyond the limit,
        static shapes first: the dynamic one serves every new size."""
        with self._lock:
            idle = [
                key
                for key, entry in self._entries.items()
                if entry.compiled is not None and entry.in_flight == 0
            ]
            idle.sort(key=lambda key: _is_dynamic(key[1]))  # stable: LRU within each
            evicted = [
                self._entries.pop(key)
                for key in idle[: max(0, len(self._entries) - _COMPILED_PER_NETWORK)]
            ]
        for entry in evicted:
            _keeper.forget(entry)

    def _compile(self, output: str, shapes: _Shapes) -> ov.CompiledModel:
        cut = _cut(shapes, self.spec.input_blob, output)
        with self._lock:
            model = self._models.get(cut)
        if model is None:
            data = onnx_bytes(self.spec.key, (output,), cut[1])
            model = self._core.read_model(io.BytesIO(data))
            with self._lock:
                self._models[cut] = model
        shaped = model.clone()
        shaped.reshape({name: list(shape) for name, shape in shapes})
        # One stream per concurrent caller, each with ``threads`` threads:
        # requests on one stream run one after another.
        config: dict[str, object] = {
            "INFERENCE_NUM_THREADS": self._threads * self._streams,
            "NUM_STREAMS": self._streams,
        }
        if self._fp32:
            config["INFERENCE_PRECISION_HINT"] = "f32"
        folder = self._cache_dir
        max_bytes = self._cache_max_mb * 1024 * 1024
        with compiling(folder, max_bytes) if folder is not None else nullcontext(False) as cached:
            if cached:
                config["CACHE_DIR"] = str(folder)
            # Timed inside the lock: waiting for another process's
            # compilation is not what a static compilation would cost.
            start = time.perf_counter()
            compiled = self._core.compile_model(shaped, "CPU", config)
            seconds = time.perf_counter() - start
        if _is_dynamic(shapes):
            # What a static compilation of one shape is taken to cost: about
            # the same work (measured 1.1-1.3 s against 1.1-1.7 s for RRDB).
            with self._lock:
                self._compile_s[cut] = seconds
        log.info("compiled %s for %s on %s", self.spec.key, dict(shapes), self.device)
        return compiled
