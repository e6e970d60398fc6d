"""What a caller asks of the engine, and the knobs an operator sets.

Kept free of any HTTP or database notion: the service and the local
``upscale`` command build these from their own inputs.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from upscayl_cloud.engine.faces.settings import FaceSettings

OutputFormat = Literal["png", "jpg", "webp"]
OUTPUT_FORMATS: tuple[OutputFormat, ...] = ("png", "jpg", "webp")
#: Longest edge each output encoder writes: libwebp's 16383, and libjpeg's
#: 65500 (``JPEG_MAX_DIMENSION``, below the 65535 JPEG's size fields hold:
#: an edge between them passed this check and failed only at the encode,
#: after every network pass). PNG's (2^31 - 1) is far beyond any pixel
#: limit. Here, in a module that loads no decoder, so the API can check it too.
MAX_OUTPUT_EDGE: dict[str, int] = {"webp": 16383, "jpg": 65500}
SCALES: tuple[int, ...] = (2, 4, 8)


#: Where the kernel shows the control groups (Linux), and which this
#: process is in (paths under that root).
CGROUP_ROOT = Path("/sys/fs/cgroup")
SELF_CGROUP = Path("/proc/self/cgroup")


def available_cores(cgroup_root: Path = CGROUP_ROOT, self_cgroup: Path = SELF_CGROUP) -> int:
    """Cores this process may use: those CPU affinity and cgroup pinning
    allow, and no more than a cgroup CPU quota pays for. A container
    limited to 2 CPUs on a 64-core node sees all 64 in its affinity, and 64
    threads per worker sharing 2 CPUs' time only wait for each other."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_cpu_quota(cgroup_root, self_cgroup)
    if quota is not None:
        cores = min(cores, quota)
    return max(1, cores)


def _cgroup_cpu_quota(root: Path, self_cgroup: Path) -> int | None:
    """The CPUs a cgroup quota allows, rounded up (1.5 CPUs' time is more
    than one thread can use): the tightest quota from this process's
    cgroup up to the root, v2 (``cpu.max``) or v1 (``cpu/cpu.cfs_quota_us``
    over ``cpu.cfs_period_us``); None without one. In a container the root
    is its own cgroup; a systemd service's quota sits in its own folder."""
    quotas = []
    for folder in _own_cgroups(root, self_cgroup, version=2):
        try:
            quota, period = (folder / "cpu.max").read_text().split()
        except (OSError, ValueError):
            continue
        quotas.append(_cpus(quota, period))
    for folder in _own_cgroups(root / "cpu", self_cgroup, version=1):
        try:
            quota = (folder / "cpu.cfs_quota_us").read_text().strip()
            period = (folder / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            continue
        quotas.append(_cpus(quota, period))
    found = [quota for quota in quotas if quota is not None]
    return min(found) if found else None


def _cpus(quota: str, period: str) -> int | None:
    """ceil(quota / period), or None where there is no quota (v2's ``max``,
    v1's ``-1``)."""
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:
        return None
    if quota_us <= 0 or period_us <= 0:
        return None
    return max(1, math.ceil(quota_us / period_us))


def _own_cgroups(root: Path, self_cgroup: Path, version: int) -> list[Path]:
    """``root`` and the folders down to this process's cgroup as
    ``self_cgroup`` names it (v2: the ``0::`` line; v1: the ``cpu``
    controller's), so quotas set on any of them count. In a container
    without a cgroup namespace of its own the path is the host's, missing
    under ``root``: the root, then the container's own cgroup, is read."""
    relative = ""
    try:
        for line in self_cgroup.read_text().splitlines():
            number, controllers, path = line.split(":", 2)
            if (version == 2 and number == "0" and not controllers) or (
                version == 1 and "cpu" in controllers.split(",")
            ):
                relative = path.strip("/")
    except (OSError, ValueError):
        pass
    folders = [root]
    for part in Path(relative).parts if relative else ():
        if part in ("..", "."):
            break
        folders.append(folders[-1] / part)
    return folders


@dataclass(frozen=True)
class ImageLimits:
    """Pixel limits checked from the header, before any pixel is decoded."""

    #: Largest accepted input (width x height). 50 MP, like imgproxy's default.
    max_source_pixels: int = 50_000_000
    #: Largest output we agree to write (width x height after scaling).
    max_output_pixels: int = 1_000_000_000
    #: Longest accepted edge of an input, whatever its area.
    max_source_edge: int = 30_000
    #: libwebp encodes a whole picture in memory (~18 bytes per pixel
    #: measured: 900 MB for 49 MP), unlike PNG and JPEG which stream.
    max_webp_output_pixels: int = 100_000_000


@dataclass(frozen=True)
class EncodeSettings:
    """Encoder effort: as decisive for throughput as the network itself."""

    #: zlib level and row filter for PNG. Measured on a 1536^2 upscaled photo
    #: (bench/README.md): level 2 with the "up" filter wrote 3.4 MB in 0.09 s,
    #: libvips's defaults (level 6, no filter) 5.2 MB in 0.19-0.28 s.
    png_compression: int = 2
    png_filter: str = "up"
    #: Default quality for lossy formats when the request gives none.
    jpeg_quality: int = 92
    webp_quality: int = 90
    #: libwebp effort (method) 0..6. Measured at Q90 (bench/README.md, "WebP
    #: and JPEG encoder settings"): effort 2 encodes 2.5-2.6x faster than
    #: libvips's default 4 for a file 2-3 % larger; 0 is at most 1.5x faster
    #: than 2 but 15 % larger; 6 saves 2 % for 2-2.5x 4's time.
    webp_effort: int = 2
    #: Compute optimal Huffman tables for JPEG: the same pixels, 2 % fewer
    #: bytes, but 2-4.6x the encode time (measured, as above). Off, libvips's
    #: default: with a fast network (or a GPU) the encode is a visible part
    #: of each image's time, and 2 % of a JPEG is little.
    jpeg_optimize_coding: bool = False
    #: JPEG chroma subsampling: ``auto`` (libvips's default) keeps full colour
    #: resolution (4:4:4) at quality 90 and above and subsamples (4:2:0)
    #: below; ``on`` always subsamples (measured 28 % smaller at Q92, and
    #: faster), ``off`` never. Halving colour resolution undoes part of an
    #: upscale, hence not the default.
    jpeg_subsample: Literal["auto", "on", "off"] = "auto"
    #: Background that transparent pixels are flattened on for JPEG output.
    jpeg_background: tuple[int, int, int] = (255, 255, 255)


@dataclass(frozen=True)
class EngineSettings:
    """Operator settings for inference."""

    #: ncnn threads per network call; default: every core this process may use.
    threads: int = field(default_factory=available_cores)
    #: Use a GPU when the backend sees one. Off forces the CPU.
    use_gpu: bool = True
    #: Network calls this process runs at once (the service's worker count).
    #: OpenVINO serves concurrent calls of one compiled network from that many
    #: streams of ``threads`` threads each; with one stream they would queue.
    concurrency: int = 1
    #: ``auto`` (by the machine, see ``backends.select``), ``ncnn``,
    #: ``openvino`` or ``onnxruntime``.
    backend: str = "auto"
    #: ``auto``: the fastest precision the hardware runs well (bf16 with
    #: OpenVINO on AMX CPUs, fp16 on GPUs); ``fp32``: full precision always.
    precision: Literal["auto", "fp32"] = "auto"
    #: Where compiled networks are kept between runs (OpenVINO, TensorRT);
    #: None: nowhere, every process compiles again.
    cache_dir: Path | None = None
    #: Size the compiled-network cache is pruned to.
    cache_max_mb: int = 4096
    #: Edge of a tile's core (before overlap), in input pixels; None: the
    #: largest tile whose inference fits ``tile_memory_mb`` for each network.
    #: Memory grows with a tile's area; the overlap's extra work shrinks.
    tile_size: int | None = None
    #: Memory one network call may take when the tile size is automatic.
    #: ncnn needs ~56 KiB per input pixel for the RRDB networks and 3-24 KiB
    #: for the others (measured, docs/models.md).
    tile_memory_mb: int = 3072
    #: Where intermediate planes go (they can be several times the output's
    #: size); None: the system's temporary directory.
    work_dir: Path | None = None
    limits: ImageLimits = field(default_factory=ImageLimits)
    encode: EncodeSettings = field(default_factory=EncodeSettings)
    #: Installed face-restoration models (``faces.models_dir(data_dir)``);
    #: None: face enhancement is unavailable.
    face_models_dir: Path | None = None
    #: Which installed face model to use; None: the first by name.
    face_model: str | None = None
    faces: FaceSettings = field(default_factory=FaceSettings)


@dataclass(frozen=True)
class UpscaleRequest:
    model: str
    scale: int = 4
    output_format: OutputFormat = "jpg"
    #: 1..100 for jpg/webp (higher is better); for png, ignored (lossless).
    quality: int | None = None
    #: Restore faces with an installed face model (refused when none is).
    enhance_face: bool = False


@dataclass(frozen=True)
class UpscaleResult:
    width: int
    height: int
    size_bytes: int
    output_format: OutputFormat
    #: What the source was, for the record.
    source_width: int
    source_height: int
