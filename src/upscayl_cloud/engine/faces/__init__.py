"""Face enhancement: restore faces in an upscaled image, as GFPGAN does.

Detection (MTCNN, weights from PyPI) finds faces and five landmarks on a
small copy of the source; each face is aligned to the 512x512 FFHQ template,
restored by an operator-installed ONNX model (1x3x512x512 RGB in [-1, 1]),
colour-matched and blended back with a feathered mask into the upscaled
plane. docs/faces.md tells the whole story and which models fit.

For the pipeline::

    model = faces.select(settings.face_models_dir, settings.face_model)  # before decoding
    faces.load_restorer(model, settings.faces)  # before decoding too: cached
    ...
    faces.enhance(color, decoded.color, model, job.work, settings.faces, should_cancel)

Importing this package is cheap: the registry, settings and errors need
neither OpenCV nor onnxruntime, so the API process can ask whether face
enhancement is available. ``enhance``, ``load_restorer``, ``detect_faces``
and ``Face`` load the heavy modules on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from upscayl_cloud.engine.faces.errors import (
    UNAVAILABLE_MESSAGE,
    FaceEnhancementUnavailableError,
    FaceModelError,
)
from upscayl_cloud.engine.faces.registry import (
    FaceModel,
    add,
    available,
    models_dir,
    remove,
    select,
    selected,
    unavailable_reason,
    unusable,
)
from upscayl_cloud.engine.faces.settings import FaceSettings

if TYPE_CHECKING:
    from upscayl_cloud.engine.faces.detect import Face, detect_faces
    from upscayl_cloud.engine.faces.enhancer import enhance, load_restorer

_LAZY = {
    "Face": "upscayl_cloud.engine.faces.detect",
    "detect_faces": "upscayl_cloud.engine.faces.detect",
    "enhance": "upscayl_cloud.engine.faces.enhancer",
    "load_restorer": "upscayl_cloud.engine.faces.enhancer",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "UNAVAILABLE_MESSAGE",
    "Face",
    "FaceEnhancementUnavailableError",
    "FaceModel",
    "FaceModelError",
    "FaceSettings",
    "add",
    "available",
    "detect_faces",
    "enhance",
    "load_restorer",
    "models_dir",
    "remove",
    "select",
    "selected",
    "unavailable_reason",
    "unusable",
]
