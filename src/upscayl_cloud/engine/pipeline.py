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
from pathlib import Path
from typing import TYPE_CHECKING

from upscayl_cloud.engine import faces, imageio
from upscayl_cloud.engine.catalog import Run, Step, get_model
from upscayl_cloud.engine.errors import InvalidOptionError
from upscayl_cloud.engine.options import (
    OUTPUT_FORMATS,
    SCALES,
    EngineSettings,
    UpscaleRequest,
    UpscaleResult,
)
from upscayl_cloud.engine.planeio import load_plane, save_plane
from upscayl_cloud.engine.planes import Plane, extrema
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
