"""Decode -> network passes -> exact resize -> encode, for one image file.

The steps run in a fixed order over one ``_Job`` state, with a cancellation
check between tiles. Every intermediate image lives in a plane on disk inside
a private work directory that is removed afterwards, so memory holds a tile
at a time and a failure leaves nothing behind. Limits are checked from the
header before anything is decoded, and the output's size before any network
runs, so an impossible request fails in milliseconds.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING

from upscayl_cloud.engine import faces, imageio
from upscayl_cloud.engine.catalog import Run, Shrink, Step, get_model
from upscayl_cloud.engine.errors import InvalidOptionError
from upscayl_cloud.engine.networks import NETWORKS
from upscayl_cloud.engine.options import (
    OUTPUT_FORMATS,
    SCALES,
    EngineSettings,
    UpscaleRequest,
    UpscaleResult,
)
from upscayl_cloud.engine.planeio import load_plane, save_plane
from upscayl_cloud.engine.planes import DTYPE, Plane, extrema
from upscayl_cloud.engine.runner import load_network
from upscayl_cloud.engine.tiling import configured_tile_size, count_calls, upscale_plane

if TYPE_CHECKING:
    import pyvips

Progress = Callable[[float], None]
ShouldCancel = Callable[[], bool]


@dataclass
class _Job:
    request: UpscaleRequest
    settings: EngineSettings
    steps: tuple[Step, ...]
    work: Path
    progress: Progress | None
    should_cancel: ShouldCancel | None
    calls_total: int = 0
    calls_done: int = 0

    def call_done(self) -> None:
        self.calls_done += 1
        if self.progress is not None and self.calls_total:
            self.progress(min(1.0, self.calls_done / self.calls_total))


def upscale_file(
    source: Path,
    destination: Path,
    request: UpscaleRequest,
    *,
    settings: EngineSettings | None = None,
    progress: Progress | None = None,
    declared_type: str | None = None,
    should_cancel: ShouldCancel | None = None,
) -> UpscaleResult:
    """Upscale the image at ``source`` into ``destination``.

    Raises an ``EngineError`` subclass for anything wrong with the input or the
    request; ``progress`` receives the fraction of network calls done.
    """
    settings = settings or EngineSettings()
    _check_request(request)
    model = get_model(request.model)
    steps = model.plan(request.scale)
    limits = settings.limits
    # Refused before any work when no face model is installed, never ignored.
    face_model = (
        faces.select(settings.face_models_dir, settings.face_model)
        if request.enhance_face
        else None
    )

    info = imageio.probe(Path(source), limits, declared_type)
    out_w, out_h = info.width * request.scale, info.height * request.scale
    imageio.check_output_size(out_w, out_h, request.output_format, limits)
    if face_model is not None:
        # Loaded (once per process) before decoding: a model file that cannot
        # be used failed only after the whole upscale, as an internal error.
        faces.load_restorer(face_model, settings.faces)

    with tempfile.TemporaryDirectory(prefix="upscayl-", dir=settings.work_dir) as tmp:
        job = _Job(request, settings, steps, Path(tmp), progress, should_cancel)
        decoded = imageio.decode(Path(source), job.work, limits, declared_type)
        alpha = decoded.alpha
        alpha_by_network = alpha is not None and len(set(extrema(alpha))) > 1
        planes = [decoded.color] + ([alpha] if alpha_by_network else [])
        job.calls_total = sum(_count_calls(job, p.width, p.height) for p in planes)

        color = _run_steps(job, decoded.color, "color", out_w, out_h)
        if face_model is not None:
            faces.enhance(
                color,
                decoded.color,
                face_model,
                job.work,
                settings.faces,
                should_cancel,
                grey=decoded.source.is_grey,
            )
        if alpha is None:
            alpha_out = None
        elif alpha_by_network:
            alpha_out = _run_steps(job, alpha, "alpha", out_w, out_h)
            alpha_out = _bound_alpha(alpha_out, alpha, request.scale, job.work)
        else:
            # A constant alpha (e.g. an opaque RGBA PNG) resizes exactly.
            alpha_out = imageio.resize(alpha, out_w, out_h, job.work / "alpha-out.raw")
        size = imageio.encode(
            color,
            alpha_out,
            decoded,
            Path(destination),
            request.output_format,
            request.quality,
            settings.encode,
        )
    if progress is not None:
        progress(1.0)
    return UpscaleResult(
        width=out_w,
        height=out_h,
        size_bytes=size,
        output_format=request.output_format,
        source_width=info.width,
        source_height=info.height,
    )


def work_space_bytes(
    width: int,
    height: int,
    request: UpscaleRequest,
    *,
    has_alpha: bool,
    sixteen_bit: bool = False,
    source_bytes: int = 0,
) -> int:
    """Most bytes the work folder holds at once while :func:`upscale_file`
    turns a ``width x height`` source into ``request``'s output, from the
    header's numbers alone (nothing is read or written).

    It follows the planes ``upscale_file`` keeps (``DTYPE``, 2 bytes a
    sample), phase by phase, and returns the largest phase plus
    ``source_bytes`` (the source file, which sits in the work folder
    throughout):

    * decode: the loader's pixels staged (3 bands, +1 for alpha; staged for
      alpha or EXIF rotation, counted always) beside the decoded colour and
      alpha planes;
    * colour passes: the decoded planes (kept to the end) plus, at each step
      of the model's plan, the step's input and output (``_replace`` deletes
      an intermediate once the next step has read it), the exact-size resize
      included when the passes overshoot;
    * alpha (when the source has it): the colour output plus the alpha's own
      passes, or the network's alpha and its bounded copy
      (``_bound_alpha``), whichever is larger; a constant alpha needs less;
    * encode: the colour and alpha outputs plus the encoded file, counted at
      its uncompressed size (a bound for PNG, which stores noise at about
      that; JPEG and WebP come far below).

    Not counted: face enhancement's small detection preview and the
    thumbnail (made after the planes are gone). libvips writes no temporary
    files of its own: the loaders open with ``memory=True`` (``decode``).

    A 3950x3950 RGBA PNG at 8x (998 MP out) with a 4x+2x model: 12.1 GB
    (colour output 6.0 GB, alpha 2.0 GB, encoded bound 4.0 GB; the alpha
    phase alone is 10.1 GB); crystal-plus-4x's 3x+3x passes: 13.7 GB; a
    16-bit RGBA PNG: 16.1 GB, the most the default limits allow.

    Measured (the work folder's file sizes summed every 5 ms, with the
    chelsea photo resized and a gradient alpha, quick-clear-4x, ncnn on 2
    threads; allocated blocks came within 0.1 MB of the sizes):

    =====================  ============  ========  =====
    source, output         peak          estimate  ratio
    =====================  ============  ========  =====
    600x600 RGBA, 4x png   60.8 MB       73.2 MB   1.20
    600x600 RGBA, 4x jpg   60.6 MB       67.4 MB   1.11
    300x300 RGBA, 8x png   56.3 MB       70.2 MB   1.25
    =====================  ============  ========  =====

    The peak was the alpha phase each time; the rest is the encoded bound
    (the 4x PNG was 9.0 MB, not 23 MB). ``tests/engine/test_pipeline.py``
    repeats the first on a smaller image.
    """
    steps = get_model(request.model).plan(request.scale)
    sample = DTYPE.itemsize
    source_px = width * height
    out_w, out_h = width * request.scale, height * request.scale
    out_px = out_w * out_h
    alpha_bands = 1 if has_alpha else 0

    chain = _chain_pixels(width, height, steps, out_w, out_h)
    # Each step's output lives beside its input (the decoded source is
    # counted apart: it is never deleted before the end).
    chain_peak = max([chain[0]] + [a + b for a, b in pairwise(chain)])

    decoded = (3 + alpha_bands) * source_px * sample
    phases = [
        2 * decoded,  # staged + colour + alpha
        decoded + 3 * chain_peak * sample,
    ]
    colour_out = 3 * out_px * sample
    alpha_out = alpha_bands * out_px * sample
    if has_alpha:
        phases.append(decoded + colour_out + max(chain_peak, 2 * out_px) * sample)
    out_bands = 3 + (alpha_bands if request.output_format != "jpg" else 0)
    encoded_sample = 2 if sixteen_bit and request.output_format == "png" else 1
    phases.append(decoded + colour_out + alpha_out + out_bands * out_px * encoded_sample)
    return source_bytes + max(phases)


def _chain_pixels(
    width: int, height: int, steps: tuple[Step, ...], out_w: int, out_h: int
) -> list[int]:
    """Pixels of each plane ``_run_steps`` writes, in order."""
    pixels = []
    for step in steps:
        if isinstance(step, Shrink):
            width, height = width // step.factor, height // step.factor
        else:
            factor = NETWORKS[step.network].scale
            width, height = width * factor, height * factor
        pixels.append(width * height)
    if (width, height) != (out_w, out_h):
        pixels.append(out_w * out_h)
    return pixels


def _check_request(request: UpscaleRequest) -> None:
    if request.scale not in SCALES:
        raise InvalidOptionError(f"scale must be one of {list(SCALES)}, not {request.scale}")
    if request.output_format not in OUTPUT_FORMATS:
        raise InvalidOptionError(
            f"output format must be one of {list(OUTPUT_FORMATS)}, not {request.output_format!r}"
        )
    if request.quality is not None and not 1 <= request.quality <= 100:
        raise InvalidOptionError(f"quality must be between 1 and 100, not {request.quality}")


def _count_calls(job: _Job, width: int, height: int) -> int:
    calls = 0
    for step in job.steps:
        if isinstance(step, Run):
            runner = load_network(step.network, job.settings)
            calls += count_calls(runner, width, height, configured_tile_size(runner, job.settings))
            width, height = width * runner.spec.scale, height * runner.spec.scale
        else:
            width, height = width // step.factor, height // step.factor
    return calls


def _run_steps(job: _Job, source: Plane, name: str, out_w: int, out_h: int) -> Plane:
    plane = source
    for index, step in enumerate(job.steps):
        target = job.work / f"{name}-{index}.raw"
        if isinstance(step, Run):
            runner = load_network(step.network, job.settings)
            result = upscale_plane(
                runner,
                plane,
                target,
                configured_tile_size(runner, job.settings),
                on_call=job.call_done,
                should_cancel=job.should_cancel,
            )
        else:
            result = imageio.resize(
                plane, plane.width // step.factor, plane.height // step.factor, target
            )
        plane = _replace(plane, result, source)
    if (plane.width, plane.height) != (out_w, out_h):
        result = imageio.resize(plane, out_w, out_h, job.work / f"{name}-final.raw")
        plane = _replace(plane, result, source)
    return plane


def _bound_alpha(upscaled: Plane, source: Plane, scale: int, work: Path) -> Plane:
    """``upscaled`` alpha kept within the source's alpha around each pixel.

    A network returns an opaque area as 254.5/255 and a transparent one as
    0.5/255 or more: the opaque parts of a logo turned see-through, and its
    empty parts kept faint colour. Each output pixel is clamped between the
    least and the greatest alpha of the source pixel it comes from and its 8
    neighbours: uniform areas come back exactly as they were, and edges and
    gradients keep the network's values, less any overshoot."""
    alpha = load_plane(source)
    # Edges copied outwards, so that border pixels have 8 neighbours too.
    padded = alpha.embed(1, 1, alpha.width + 2, alpha.height + 2, extend="copy")

    def bound(index: int) -> pyvips.Image:
        ranked = padded.rank(3, 3, index).crop(1, 1, alpha.width, alpha.height)
        return ranked.zoom(scale, scale)

    bounded = load_plane(upscaled).maxpair(bound(0)).minpair(bound(8))
    result = save_plane(bounded, work / "alpha-bounded.raw")
    upscaled.path.unlink(missing_ok=True)
    return result


def _replace(previous: Plane, result: Plane, source: Plane) -> Plane:
    """Delete an intermediate once the next step has consumed it, so the work
    directory holds at most two images (besides the decoded source) at once."""
    if previous is not source:
        previous.path.unlink(missing_ok=True)
    return result
