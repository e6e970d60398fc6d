"""Face enhancement on an upscaled plane: detect, align, restore, paste back.

It runs after the last network pass and before encoding. Detection looks at
a small copy of the *source* (bounded by ``detect_max_edge``), so it costs
the same on a 50 MP photo as on a snapshot, and an image without faces is
left byte for byte as it was. The restorer is loaded before the image is
decoded (``load_restorer``, from the pipeline), so a model file that cannot
be used fails the file at once rather than after the whole upscale.
Faces are cut from the *upscaled* plane, so the restorer starts from the best
pixels available and its result is colour-matched against what it replaces.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from upscayl_cloud.engine.errors import CancelledError
from upscayl_cloud.engine.faces import align, paste, restorer
from upscayl_cloud.engine.faces.detect import Face, detect_faces
from upscayl_cloud.engine.faces.errors import (
    FaceEnhancementUnavailableError,
    FaceModelError,
    unusable_model_message,
)
from upscayl_cloud.engine.faces.registry import FaceModel
from upscayl_cloud.engine.faces.settings import FaceSettings
from upscayl_cloud.engine.planeio import new_plane_path, resize
from upscayl_cloud.engine.planes import Plane

log = logging.getLogger(__name__)


def load_restorer(model: FaceModel, settings: FaceSettings | None = None) -> restorer.Restorer:
    """``model``'s restorer as ``enhance`` runs it (loaded once per process).

    A file that lists fine but does not load (cut short, not ONNX, outside
    the contract) is refused as unavailable, in words the client can act on
    (drop ``enhanceFace``) and without the server's paths; what onnxruntime
    said goes to the log, for the operator who has to replace the file."""
    settings = settings or FaceSettings()
    try:
        return restorer.load(model.path, settings.use_gpu, settings.threads, settings.fidelity)
    except (FaceModelError, OSError) as exc:
        log.error("face model %r (%s) cannot be used: %s", model.name, model.path, exc)
        why = "its file cannot be read" if isinstance(exc, OSError) else "it does not load"
        raise FaceEnhancementUnavailableError(unusable_model_message(model.name, why)) from exc


def enhance(
    color: Plane,
    source: Plane,
    model: FaceModel,
    work: Path,
    settings: FaceSettings | None = None,
    should_cancel: Callable[[], bool] | None = None,
    grey: bool = False,
) -> int:
    """Restore every face of ``source`` in place in ``color`` (its upscale).

    ``color`` and ``source`` are 3-band planes of the same picture at any
    scale; ``work`` is a folder for a temporary detection copy. ``grey``
    (a grey source widened to RGB) keeps restored faces grey: restorers
    paint skin tones into black-and-white photos. Returns the number of
    faces restored."""
    settings = settings or FaceSettings()
    preview = _preview(source, settings.detect_max_edge, work)
    faces = detect_faces(preview, settings.min_face_px, threads=1)
    faces = faces[: settings.max_faces]
    if not faces:
        return 0
    net = load_restorer(model, settings)
    mask = paste.feather_mask()
    sx = color.width / preview.shape[1]
    sy = color.height / preview.shape[0]
    done = 0
    for face in faces:
        if should_cancel is not None and should_cancel():
            raise CancelledError("the task was cancelled")
        done += restore_face(color, _scaled(face, sx, sy), net, mask, settings, grey)
    return done


def restore_face(
    color: Plane,
    landmarks: np.ndarray,
    net: restorer.Restorer,
    mask: np.ndarray,
    settings: FaceSettings,
    grey: bool = False,
) -> int:
    """Restore the face whose landmarks (in ``color``'s pixels) are given;
    returns 1, or 0 when no transform fits or the face lies off the image."""
    matrix = align.face_transform(landmarks)
    if matrix is None:
        return 0
    region = align.footprint(matrix, color.width, color.height)
    if region is None:
        return 0
    face = paste.cut(color, matrix, region, settings.band_pixels)
    restored = net.restore(face)
    if settings.colour_match:
        restored = paste.match_colour(restored, face, mask)
    if grey:
        # The mean, as the encoder averages the bands back to one.
        restored = np.repeat(restored.mean(axis=2, keepdims=True), 3, axis=2)
    paste.paste(color, restored, mask, matrix, region, settings.band_pixels)
    return 1


def _scaled(face: Face, sx: float, sy: float) -> np.ndarray:
    """Landmarks from the detection copy onto the output (pixel centres)."""
    return (face.landmarks + 0.5) * np.array([sx, sy], np.float32) - 0.5


def _preview(source: Plane, max_edge: int, work: Path) -> np.ndarray:
    """An 8-bit RGB copy of ``source`` whose longest edge is at most
    ``max_edge``; resized by libvips through a plane, so a large source is
    never held in memory whole."""
    factor = max(source.width, source.height) / max_edge
    if factor <= 1.0:
        samples = source.read_all()
    else:
        width = max(1, math.floor(source.width / factor))
        height = max(1, math.floor(source.height / factor))
        small = resize(source, width, height, new_plane_path(work, "faces-preview"))
        try:
            samples = small.read_all()
        finally:
            small.path.unlink(missing_ok=True)
    return ((samples[..., :3].astype(np.uint32) + 128) // 257).astype(np.uint8)
