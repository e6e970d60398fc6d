"""The image limits, shared by the API's early checks and the workers' engine.

Both sides build the same ``ImageLimits`` from the settings, so a request the
API accepts is one the engine will accept (and the other way round): a file
that can only fail later is refused with a 400 before anything is charged.
``engine.options`` is plain dataclasses; importing it loads no decoder.
"""

from __future__ import annotations

from upscayl_cloud.config import Settings
from upscayl_cloud.engine.options import MAX_OUTPUT_EDGE, ImageLimits


def image_limits(settings: Settings) -> ImageLimits:
    return ImageLimits(max_source_pixels=settings.max_source_pixels)


def output_problem(
    width: int, height: int, scale: int, fmt: str, limits: ImageLimits
) -> str | None:
    """Why a ``width`` x ``height`` source cannot be upscaled as asked, or None."""
    if width * height > limits.max_source_pixels:
        return f"{width}x{height} pixels exceeds the limit of {limits.max_source_pixels} pixels"
    if max(width, height) > limits.max_source_edge:
        return f"{width}x{height} exceeds the longest accepted edge of {limits.max_source_edge}"
    out_w, out_h = width * scale, height * scale
    if out_w * out_h > limits.max_output_pixels:
        return (
            f"the {scale}x output ({out_w}x{out_h}) exceeds the limit of "
            f"{limits.max_output_pixels} pixels; choose a smaller scale"
        )
    if fmt == "webp" and out_w * out_h > limits.max_webp_output_pixels:
        return (
            f"a WebP output of {out_w}x{out_h} exceeds the WebP limit of "
            f"{limits.max_webp_output_pixels} pixels; choose png or jpg, or a smaller scale"
        )
    edge = MAX_OUTPUT_EDGE.get(fmt)
    if edge is not None and max(out_w, out_h) > edge:
        return f"{fmt} cannot store an edge of {max(out_w, out_h)} pixels (at most {edge})"
    return None
