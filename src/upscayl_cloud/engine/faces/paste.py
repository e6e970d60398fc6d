"""Cut a face out of the upscaled plane, and blend the restored face back.

Only the face's footprint on the output is ever read, and in bands of rows:
an 8x output can hold a face thousands of pixels wide, and a float copy of
that region alone could take gigabytes. Reading shrinks each band by an
integer factor (a box filter, so no aliasing) until the face is about the
template's size; writing warps the restored face straight into each band.

The blend uses a feathered mask built in template space (a square inset and
blurred), so the feather scales with the face. Where the mask is exactly
zero the original samples are written back untouched: outside a face's
footprint, the output is byte for byte the plain upscale.
"""

from __future__ import annotations

import cv2
import numpy as np

from upscayl_cloud.engine.faces import align
from upscayl_cloud.engine.faces.align import SIZE
from upscayl_cloud.engine.faces.settings import BAND_PIXELS
from upscayl_cloud.engine.planes import MAX_VALUE, Plane, to_float

#: Colour matching may change a channel's spread by at most this factor,
#: so restored detail (more contrast) survives.
MAX_STD_RATIO = 1.5


def feather_mask(size: int = SIZE) -> np.ndarray:
    """``size x size`` float32 weights: 1 inside, falling smoothly to exactly
    0 well inside the edges (a square inset by 1/12 of the side, blurred by a
    kernel narrower than the inset), so the template's border, which may
    hold mirrored pixels, never shows."""
    inset = size // 12
    mask = np.zeros((size, size), np.float32)
    mask[inset:-inset, inset:-inset] = 1.0
    kernel = inset | 1  # odd, radius inset/2: the outer inset/2 stays zero
    blurred = cv2.GaussianBlur(mask, (kernel, kernel), sigmaX=inset / 5.0)
    return np.asarray(blurred, np.float32)


def cut(
    plane: Plane,
    matrix: np.ndarray,
    region: tuple[int, int, int, int],
    band_pixels: int = BAND_PIXELS,
) -> np.ndarray:
    """The face warped onto the template, ``512 x 512 x 3`` float in 0..1.

    ``matrix`` maps plane coordinates onto the template and ``region`` is its
    footprint (:func:`align.footprint`). Template pixels outside the plane
    mirror its edge, as restorers expect a full picture."""
    x0, y0, x1, y1 = region
    factor = max(1, int(1.0 / align.scale_of(matrix)))
    # Keep whole blocks of ``factor`` pixels; the face's pixels are interior.
    x1 = x0 + max(factor, (x1 - x0) // factor * factor)
    y1 = y0 + max(factor, (y1 - y0) // factor * factor)
    x1, y1 = min(x1, plane.width), min(y1, plane.height)
    rows = max(factor, band_pixels // max(1, x1 - x0) // factor * factor)
    parts = []
    for top in range(y0, y1, rows):
        band = to_float(plane.read(x0, top, x1, min(y1, top + rows)))
        if factor > 1:
            size = (max(1, band.shape[1] // factor), max(1, band.shape[0] // factor))
            band = cv2.resize(band, size, interpolation=cv2.INTER_AREA)
        parts.append(band)
    region_image = np.vstack(parts)
    to_template = align.then(
        align.then(align.scaling(float(factor)), align.translation(x0, y0)), matrix
    )
    return np.asarray(
        cv2.warpAffine(
            region_image,
            to_template,
            (SIZE, SIZE),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT_101,
        ),
        np.float32,
    )


def match_colour(restored: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Give ``restored`` the per-channel mean and spread (in CIELAB, within
    ``mask``) of ``reference``: restorers trained on FFHQ pull skin tones and
    white balance towards their training set, which shows against the rest
    of the picture."""
    weights = mask[..., None].astype(np.float64)
    total = float(weights.sum())
    if total <= 0:
        return restored
    lab_r = cv2.cvtColor(np.ascontiguousarray(restored, np.float32), cv2.COLOR_RGB2Lab)
    lab_f = cv2.cvtColor(np.ascontiguousarray(reference, np.float32), cv2.COLOR_RGB2Lab)

    def stats(lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean = (lab * weights).sum(axis=(0, 1)) / total
        var = (((lab - mean) ** 2) * weights).sum(axis=(0, 1)) / total
        return mean, np.sqrt(var)

    mean_r, std_r = stats(lab_r)
    mean_f, std_f = stats(lab_f)
    ratio = np.clip(std_f / np.maximum(std_r, 1e-6), 1.0 / MAX_STD_RATIO, MAX_STD_RATIO)
    matched = ((lab_r - mean_r) * ratio + mean_f).astype(np.float32)
    rgb = cv2.cvtColor(matched, cv2.COLOR_Lab2RGB)
    return np.clip(rgb, 0.0, 1.0).astype(np.float32)


def paste(
    plane: Plane,
    face: np.ndarray,
    mask: np.ndarray,
    matrix: np.ndarray,
    region: tuple[int, int, int, int],
    band_pixels: int = BAND_PIXELS,
) -> None:
    """Blend ``face`` (template space) into ``plane`` through ``mask``.

    ``matrix`` maps plane coordinates onto the template. When the face is
    smaller on the plane than in the template, face and mask are first
    shrunk with an area filter so the warp does not alias."""
    from_template = align.invert(matrix)
    scale = 1.0 / align.scale_of(matrix)  # plane pixels per template pixel
    if scale < 1.0:
        side = max(8, round(SIZE * scale))
        ratio = side / SIZE
        face = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask, (side, side), interpolation=cv2.INTER_AREA)
        from_template = align.then(align.invert(align.scaling(ratio)), from_template)
    x0, y0, x1, y1 = region
    width = x1 - x0
    rows = max(1, band_pixels // width)
    face_flags = cv2.INTER_CUBIC if scale > 1.0 else cv2.INTER_LINEAR
    for top in range(y0, y1, rows):
        height = min(y1, top + rows) - top
        to_band = align.then(from_template, align.translation(-x0, -top))
        weight = cv2.warpAffine(
            mask, to_band, (width, height), flags=cv2.INTER_LINEAR, borderValue=0.0
        )
        if not (weight > 0).any():
            continue
        warped = cv2.warpAffine(face, to_band, (width, height), flags=face_flags, borderValue=0.0)
        original = plane.read(x0, top, x1, top + height)
        plane.write(x0, top, _blend(original, warped, weight))


def _blend(original: np.ndarray, face: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``original + weight * (face - original)`` as samples, computed in
    place in ``face`` (a band holds a few float copies, not a dozen); where
    ``weight`` is 0 the original samples are kept exactly."""
    base = to_float(original)
    face -= base
    face *= weight[..., None]
    face += base
    np.clip(face, 0.0, 1.0, out=face)
    face *= MAX_VALUE
    face += 0.5
    blended = face.astype(original.dtype)
    np.copyto(blended, original, where=(weight == 0)[..., None])
    return blended
