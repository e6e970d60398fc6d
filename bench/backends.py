"""Backends against ncnn: speed and fidelity of every network, in one run.

``auto`` picks OpenVINO on bf16 CPUs because it is faster than ncnn there
(``engine/backends/select.py``); this puts numbers under that choice, for
every network and for whole pipelines, on one machine, in one process, so
that load and noise from other jobs hit every backend alike. The first
backend listed (ncnn fp32 by default) is the baseline. For each network:

1. network throughput: input megapixels per second of ``upscale_plane`` (the
   tiled pass the pipeline runs) over a real photo crop, median of
   ``--repeats`` runs after a warm-up call, whose time (load + OpenVINO's
   compilation, no compiled-model cache) is reported on its own;
2. the ratio of that throughput to the baseline's;
3. fidelity: PSNR (and largest difference) of each backend's output against
   the baseline's output on the same input: bf16 loses precision, and a
   wrong ONNX conversion shows up here as a low PSNR.

Then the same for the whole pipeline (``upscale_file``: PNG decode, passes,
PNG encode) for one model per network family (``--models``). Repeats are
interleaved (ncnn, openvino, ..., ncnn, openvino, ...), so a burst of load
from another job hits every backend of a row alike.

``--memory`` adds the peak resident-size growth of one pass of one network
(default: AnimeVideo v3 x4 on OpenVINO) at several image sizes, each in a
fresh subprocess: tiles are bounded by ``tile_memory_mb``, so the growth
must follow the largest tile, not the image.

Input edges are small so that all 19 networks finish in about 15 minutes on
an otherwise idle two-core machine (the RRDB networks run ~0.003 input MP/s
on ncnn there). Run it on a quiet machine: ncnn's two OpenMP threads suffer
most from other jobs (a 0.05 s call took 1.1 s while tests ran beside it),
which would flatter every other backend; the load average is printed at the
start and the end. ``--edge`` overrides every edge, e.g. for a quick check:

    PYTHONPATH=. .venv/bin/python bench/backends.py
    PYTHONPATH=. .venv/bin/python bench/backends.py --networks '' --models '' --memory
    PYTHONPATH=. .venv/bin/python bench/backends.py --networks realesr-animevideov3-x2 \\
        --models '' --edge 48 --repeats 1
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyvips
from skimage import data

from upscayl_cloud.engine import runner as engine_runner
from upscayl_cloud.engine.backends.base import Network
from upscayl_cloud.engine.catalog import MODELS, Run, get_model
from upscayl_cloud.engine.networks import NETWORKS, NetworkSpec
from upscayl_cloud.engine.options import EngineSettings, UpscaleRequest, available_cores
from upscayl_cloud.engine.pipeline import upscale_file
from upscayl_cloud.engine.planes import MAX_VALUE, Plane
from upscayl_cloud.engine.tiling import auto_tile_size, plan_tiles, tile_rule, upscale_plane


@dataclass(frozen=True)
class Config:
    """One backend configuration: a ``--backends`` name and its settings."""

    name: str
    backend: str
    precision: str

    def settings(self, threads: int) -> EngineSettings:
        # use_gpu=False: ncnn must not take a Vulkan GPU, nor onnxruntime a
        # CUDA one, where the machine has them; this compares CPU paths.
        return EngineSettings(
            threads=threads, use_gpu=False, backend=self.backend, precision=self.precision
        )


CONFIGS: dict[str, Config] = {
    c.name: c
    for c in (
        Config("ncnn", "ncnn", "fp32"),
        Config("openvino-fp32", "openvino", "fp32"),
        # OpenVINO's own choice: bf16 on AMX / AVX-512-BF16 CPUs, else fp32.
        Config("openvino", "openvino", "auto"),
        Config("onnxruntime", "onnxruntime", "fp32"),
    )
}

#: Models for the pipeline part: one per network family (RRDB, AnimeVideo v3,
#: SPAN, Real-CUGAN, waifu2x), each with the input edge it runs at.
PIPELINE_EDGE: dict[str, int] = {
    "upscayl-standard-4x": 96,
    "quick-clear-4x": 384,
    "upscayl-lite-4x": 320,
    "digital-art-plus-4x": 256,
    "nature-boost-4x": 192,
}


def network_edge(spec: NetworkSpec) -> int:
    """Input edge per network, sized for ~5-25 s per network and backend on
    two cores (ncnn rates from bench/README.md "Engine speed")."""
    if spec.kib_per_pixel >= 56:  # RRDB: realesrgan-x4plus(-anime), realsr-df2k-x4
        return 96
    if spec.key.startswith("realcugan"):
        return 256
    if spec.key.startswith("span"):
        return 320
    return 384  # AnimeVideo v3 and waifu2x upconv7: the fastest


def photo(name: str, edge: int) -> np.ndarray:
    """A centred ``edge x edge`` crop of a scikit-image photo, mirrored
    outwards where the photo is smaller than ``edge``."""
    image = np.asarray(getattr(data, name)())[:, :, :3]
    height, width = image.shape[:2]
    pad_y, pad_x = max(0, edge - height), max(0, edge - width)
    if pad_y or pad_x:
        image = np.pad(
            image,
            ((pad_y // 2, pad_y - pad_y // 2), (pad_x // 2, pad_x - pad_x // 2), (0, 0)),
            mode="symmetric",
        )
        height, width = image.shape[:2]
    y0, x0 = (height - edge) // 2, (width - edge) // 2
    return np.ascontiguousarray(image[y0 : y0 + edge, x0 : x0 + edge])


def photo_plane(path: Path, name: str, edge: int) -> Plane:
    """``photo`` as a plane (``Plane.from_array`` takes floats in 0..1, not bytes)."""
    return Plane.from_array(path, photo(name, edge).astype(np.float32) / 255)


def forget_networks() -> None:
    """Drop every network ``load_network`` holds.

    The engine keeps each loaded network for the process's lifetime; 19
    networks on four backends (with onnxruntime's arenas and OpenVINO's
    compiled models) would add up to several GB on a shared machine. A
    benchmark-only reach into the runner's private cache.
    """
    with engine_runner._lock:
        engine_runner._loaded.clear()
    gc.collect()


def psnr(a: np.ndarray, b: np.ndarray, peak: float) -> tuple[float, float]:
    """PSNR in dB (``inf`` when equal) and the largest difference in 1/255."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} and {b.shape}")
    diff = a.astype(np.float64) / peak - b.astype(np.float64) / peak
    mse = float(np.mean(diff * diff))
    return (math.inf if mse == 0 else 10 * math.log10(1 / mse)), float(np.abs(diff).max() * 255)


@dataclass
class Row:
    """One measured (subject, backend) pair."""

    subject: str
    edge: int
    config: str
    device: str = ""
    first_s: float = math.nan
    times: list[float] = field(default_factory=list)
    psnr_db: float = math.nan
    max_diff: float = math.nan
    error: str = ""

    @property
    def median_s(self) -> float:
        return statistics.median(self.times) if self.times else math.nan

    @property
    def mps(self) -> float:
        return self.edge * self.edge / 1e6 / self.median_s


def timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def measure(
    subject: str,
    edge: int,
    configs: list[Config],
    repeats: int,
    first: Callable[[Config], tuple[str, float]],
    again: Callable[[Config], None],
    output: Callable[[Config], tuple[np.ndarray, float]],
) -> list[Row]:
    """Warm up each backend, time ``repeats`` interleaved rounds, compare.

    ``first`` loads and runs once (returns the device and its seconds),
    ``again`` runs once more, ``output`` gives the warm-up's result and its
    peak value. A backend that fails is reported and left out of the rest.
    """
    rows = {c.name: Row(subject, edge, c.name) for c in configs}
    live = []
    for config in configs:
        try:
            rows[config.name].device, rows[config.name].first_s = first(config)
            live.append(config)
        except Exception as exc:  # a broken backend must not end a 15-minute run
            rows[config.name].error = f"{type(exc).__name__}: {exc}"[:120]
    for _ in range(repeats):
        for config in list(live):
            try:
                rows[config.name].times.append(timed(lambda config=config: again(config)))
            except Exception as exc:
                rows[config.name].error = f"{type(exc).__name__}: {exc}"[:120]
                live.remove(config)
    if live and live[0] == configs[0]:
        reference, peak = output(configs[0])
        for config in live:
            row = rows[config.name]
            try:
                row.psnr_db, row.max_diff = psnr(output(config)[0], reference, peak)
            except Exception as exc:
                row.error = f"{type(exc).__name__}: {exc}"[:120]
    return [rows[c.name] for c in configs]


def network_rows(
    key: str, edge: int, configs: list[Config], args: argparse.Namespace, work: Path
) -> list[Row]:
    """Part 1: ``upscale_plane`` of network ``key`` on every backend."""
    source = photo_plane(work / "source.raw", args.image, edge)
    runners: dict[str, Network] = {}

    def tile(runner: Network, config: Config) -> int:
        settings = config.settings(args.threads)
        return settings.tile_size or auto_tile_size(runner, settings.tile_memory_mb)

    def first(config: Config) -> tuple[str, float]:
        start = time.perf_counter()
        runner = engine_runner.load_network(key, config.settings(args.threads))
        upscale_plane(runner, source, work / f"{config.name}.raw", tile(runner, config))
        runners[config.name] = runner
        return runner.device, time.perf_counter() - start

    def again(config: Config) -> None:
        runner = runners[config.name]
        upscale_plane(runner, source, work / "timed.raw", tile(runner, config))

    def output(config: Config) -> tuple[np.ndarray, float]:
        scale = NETWORKS[key].scale
        plane = Plane(work / f"{config.name}.raw", edge * scale, edge * scale, 3)
        return plane.read_all(), MAX_VALUE

    try:
        return measure(key, edge, configs, args.repeats, first, again, output)
    finally:
        runners.clear()
        forget_networks()


def pipeline_rows(
    model: str, edge: int, configs: list[Config], args: argparse.Namespace, work: Path
) -> list[Row]:
    """Part 2: ``upscale_file`` of ``model`` at ``--scale`` on every backend."""
    source = work / "source.png"
    pyvips.Image.new_from_array(photo(args.image, edge)).pngsave(str(source))
    request = UpscaleRequest(model, args.scale, "png")

    def run(config: Config, destination: Path) -> None:
        settings = config.settings(args.threads)
        upscale_file(source, destination, request, settings=settings)

    def first(config: Config) -> tuple[str, float]:
        seconds = timed(lambda: run(config, work / f"{config.name}.png"))
        # Every pass of a model runs on the same backend: its first network tells.
        networks = [s.network for s in get_model(model).plan(args.scale) if isinstance(s, Run)]
        runner = engine_runner.load_network(networks[0], config.settings(args.threads))
        return runner.device, seconds

    def again(config: Config) -> None:
        run(config, work / "timed.png")

    def output(config: Config) -> tuple[np.ndarray, float]:
        image = pyvips.Image.new_from_file(str(work / f"{config.name}.png"))
        return image.numpy(), 65535.0 if image.format == "ushort" else 255.0

    try:
        return measure(model, edge, configs, args.repeats, first, again, output)
    finally:
        forget_networks()


def fmt_psnr(value: float) -> str:
    if math.isnan(value):
        return "-"
    return "identical" if math.isinf(value) else f"{value:.1f}"


def print_rows(rows: list[Row], baseline: Row) -> None:
    """One table line per backend; ratios are to the baseline's MP/s."""
    for row in rows:
        if not row.times:
            failed = f"| {row.subject} | {row.edge}² | {row.config} | failed: {row.error} "
            print(failed + "| - " * 6 + "|", flush=True)
            continue
        ratio = row.mps / baseline.mps if baseline.times else math.nan
        note = f" (then failed: {row.error})" if row.error else ""
        print(
            f"| {row.subject} | {row.edge}² | {row.config}{note} | {row.device} "
            f"| {row.first_s:.2f} | {row.median_s:.2f} | {row.mps:.4f} | {ratio:.2f} "
            f"| {fmt_psnr(row.psnr_db)} | {row.max_diff:.2f} |",
            flush=True,
        )


TABLE_HEAD = (
    "| {what} | input | backend | device | first call s | median s | input MP/s "
    "| x {base} | PSNR vs {base} dB | max diff /255 |\n"
    "|---|---|---|---|---:|---:|---:|---:|---:|---:|"
)


def print_summary(what: str, results: dict[str, list[Row]], configs: list[Config]) -> None:
    """Throughput ratio per subject and backend, the gist of the long table."""
    if len(configs) < 2:
        return
    names = [c.name for c in configs]
    print(f"\n| {what} | {' | '.join(f'x {n}' for n in names[1:])} | lowest PSNR dB |")
    print(f"|---|{'---:|' * (len(names) - 1)}---:|")
    for subject, rows in results.items():
        base = rows[0]
        cells = [f"{r.mps / base.mps:.2f}" if r.times and base.times else "-" for r in rows[1:]]
        measured = [r.psnr_db for r in rows[1:] if not math.isnan(r.psnr_db)]
        lowest = fmt_psnr(min(measured)) if measured else "-"
        print(f"| {subject} | {' | '.join(cells)} | {lowest} |")


def cpu_line() -> str:
    """CPU model and the bf16 flags that decide OpenVINO's default precision."""
    model, flags = "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                name, _, value = line.partition(":")
                if name.strip() == "model name":
                    model = value.strip()
                elif name.strip() == "flags":
                    flags = set(value.split())
                if model != "unknown CPU" and flags:
                    break
    except OSError:
        pass
    bf16 = ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in ("amx_bf16", "avx512_bf16"))
    return f"{model} ({bf16})"


def versions() -> str:
    found = []
    for package in ("ncnn", "openvino", "onnxruntime"):
        try:
            module = __import__(package)
            found.append(f"{package} {module.__version__}")
        except ImportError:
            found.append(f"{package} missing")
    found.append(f"libvips {pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}")
    return ", ".join(found)


def print_header(args: argparse.Namespace) -> None:
    python = os.path.relpath(sys.executable)
    path = os.environ.get("PYTHONPATH")
    command = f"{f'PYTHONPATH={path} ' if path else ''}{python} {shlex.join(sys.argv)}"
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"- CPU: {cpu_line()}; {available_cores()} cores available, {args.threads} threads")
    print(f"- Date: {time.strftime('%F %H:%M %Z')}; load average at the start: {load}")
    print(f"- Versions: {versions()}; Python {sys.version.split()[0]}")
    print(f"- Command: `{command}`")
    print(
        f"- Input: centred crops of skimage.data.{args.image}; median of {args.repeats} "
        "interleaved runs after a warm-up call (first call = load + compile, no disk cache)",
        flush=True,
    )


def peak_rss_kib() -> tuple[int, str]:
    """The process's peak resident size (KiB) and where it was read.

    ``VmHWM`` of /proc/self/status, which ``reset_peak_rss`` can clear;
    ``ru_maxrss`` only where /proc is missing.
    """
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]), "VmHWM"
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "ru_maxrss"


def reset_peak_rss() -> bool:
    """Set the peak resident size to the current one (Linux >= 4.0).

    Needed because on Linux ``ru_maxrss`` (and ``VmHWM``) of a child started
    by fork + exec starts at the parent's peak: after part 1 the parent holds
    over a GB, and the child's own peak of a small pass was hidden under it
    (measured: 1,254 MiB "before" in a child that was using ~130 MiB).
    """
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


def memory_child(args: argparse.Namespace) -> None:
    """In a fresh process: one pass at ``--memory-child`` edge, as JSON."""
    edge = args.memory_child
    config = CONFIGS[args.memory_backend]
    settings = config.settings(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-backends-") as tmp:
        work = Path(tmp)
        source = photo_plane(work / "source.raw", args.image, edge)
        runner = engine_runner.load_network(args.memory_network, settings)
        tile = settings.tile_size or auto_tile_size(runner, settings.tile_memory_mb)
        tiles = plan_tiles(edge, edge, tile, tile_rule(runner))
        gc.collect()
        reset = reset_peak_rss()
        before, source_of_peak = peak_rss_kib()
        seconds = timed(lambda: upscale_plane(runner, source, work / "out.raw", tile))
        peak, _ = peak_rss_kib()
    biggest = max(tiles, key=lambda t: t.source.width * t.source.height).source
    print(
        json.dumps(
            {
                "edge": edge,
                "device": runner.device,
                "tiles": len(tiles),
                "tile": f"{biggest.width}x{biggest.height}",
                "before_kib": before,
                "peak_from": source_of_peak + (" reset" if reset else " (not reset)"),
                "peak_kib": peak,
                "seconds": seconds,
                "tile_memory_mb": settings.tile_memory_mb,
            }
        )
    )


def memory_report(args: argparse.Namespace) -> None:
    """Peak RSS growth of one pass at each ``--memory-sizes`` edge, each in
    its own process, so one size's peak cannot hide another's."""
    print(
        f"\n### Memory: {args.memory_network} on {args.memory_backend}, one pass per process\n"
        "\nbefore = resident size after imports, loading the network and writing the "
        "source plane (the peak is reset there); peak = peak resident size during the "
        "pass, compilation included; growth = peak - before.\n"
    )
    print("| input | device | tiles | largest tile | before MiB | peak MiB | growth MiB | pass s |")
    print("|---|---|---:|---|---:|---:|---:|---:|")
    sources = set()
    for edge in (int(v) for v in args.memory_sizes.split(",")):
        command = [
            sys.executable,
            __file__,
            "--memory-child",
            str(edge),
            "--memory-network",
            args.memory_network,
            "--memory-backend",
            args.memory_backend,
            "--image",
            args.image,
            "--threads",
            str(args.threads),
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            reason = (done.stderr.strip().splitlines() or ["?"])[-1][:120]
            print(f"| {edge}² | failed: {reason} " + "| - " * 6 + "|", flush=True)
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        before, peak = r["before_kib"] / 1024, r["peak_kib"] / 1024
        sources.add(r["peak_from"])
        print(
            f"| {edge}² | {r['device']} | {r['tiles']} | {r['tile']} | {before:,.0f} "
            f"| {peak:,.0f} | {peak - before:,.0f} | {r['seconds']:.2f} |",
            flush=True,
        )
    print(
        f"\n(tile_memory_mb = {EngineSettings().tile_memory_mb}; peak from "
        f"{', '.join(sorted(sources)) or '-'})"
    )


def names(value: str, known: dict[str, object], what: str) -> list[str]:
    chosen = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in known]
    if unknown:
        raise SystemExit(f"unknown {what}: {unknown}; choose from {list(known)}")
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", default=",".join(NETWORKS), help="'' skips part 1")
    parser.add_argument(
        "--backends", default=",".join(CONFIGS), help="the first one is the baseline"
    )
    parser.add_argument("--models", default=",".join(PIPELINE_EDGE), help="'' skips part 2")
    parser.add_argument("--scale", type=int, default=4, help="pipeline output scale")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--edge", type=int, help="one input edge for everything (quick checks)")
    parser.add_argument("--image", default="astronaut", choices=("astronaut", "chelsea"))
    parser.add_argument("--threads", type=int, default=available_cores())
    parser.add_argument("--memory", action="store_true", help="also report peak RSS growth")
    parser.add_argument("--memory-sizes", default="256,1024,2048", help="input edges, px")
    parser.add_argument("--memory-network", default="realesr-animevideov3-x4")
    parser.add_argument("--memory-backend", default="openvino", choices=list(CONFIGS))
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args)
        return

    networks = names(args.networks, NETWORKS, "network")
    models = names(args.models, MODELS, "model")
    configs = [CONFIGS[n] for n in names(args.backends, CONFIGS, "backend")]
    if not configs:
        raise SystemExit("--backends names none")
    base = configs[0].name
    print_header(args)

    with tempfile.TemporaryDirectory(prefix="bench-backends-") as tmp:
        work = Path(tmp)
        if networks:
            print(f"\n### Networks: `upscale_plane`, {base} = 1.00\n")
            print(TABLE_HEAD.format(what="network", base=base))
            per_network = {}
            for key in networks:
                edge = args.edge or network_edge(NETWORKS[key])
                rows = network_rows(key, edge, configs, args, work)
                print_rows(rows, rows[0])
                per_network[key] = rows
            print_summary("network", per_network, configs)
        if models:
            print(f"\n### Pipeline: `upscale_file` at {args.scale}x to PNG, {base} = 1.00\n")
            print(TABLE_HEAD.format(what="model", base=base))
            per_model = {}
            for model in models:
                edge = args.edge or PIPELINE_EDGE.get(model, 192)
                rows = pipeline_rows(model, edge, configs, args, work)
                print_rows(rows, rows[0])
                per_model[model] = rows
            print_summary("model", per_model, configs)
    if args.memory:
        memory_report(args)
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"\nLoad average at the end: {load}; {time.strftime('%F %H:%M %Z')}")


if __name__ == "__main__":
    main()
