"""Alignment to the 512x512 FFHQ face template, and back.

Face restorers (GFPGAN, CodeFormer, GPEN, RestoreFormer++) were trained on
FFHQ crops in which the eyes, nose and mouth corners sit at fixed points;
fed anything else they restore worse. A similarity transform (rotation,
uniform scale, translation: no shear, so the face keeps its proportions)
fitted to the five landmarks puts a detected face there, and its inverse
puts the restored face back.
"""

from __future__ import annotations

import cv2
import numpy as np

SIZE = 512
#: facexlib's FFHQ template for 512x512 (eyes, nose, mouth corners), the one
#: GFPGAN and CodeFormer align with.
TEMPLATE = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.1936],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ],
    dtype=np.float32,
)


def face_transform(landmarks: np.ndarray) -> np.ndarray | None:
    """2x3 matrix mapping image coordinates onto the template; None when the
    landmarks are degenerate (no similarity fits them)."""
    matrix, _inliers = cv2.estimateAffinePartial2D(
        np.asarray(landmarks, np.float32), TEMPLATE, method=cv2.LMEDS
    )
    if matrix is None or not np.isfinite(matrix).all() or scale_of(matrix) <= 0:
        return None
    return matrix.astype(np.float64)


def scale_of(matrix: np.ndarray) -> float:
    """How many destination pixels one source pixel spans (similarity: uniform)."""
    return float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))


def invert(matrix: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(matrix)


def then(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """The 2x3 transform applying ``first`` and then ``second``."""
    full = np.vstack([second, [0.0, 0.0, 1.0]]) @ np.vstack([first, [0.0, 0.0, 1.0]])
    return full[:2]


def scaling(factor: float) -> np.ndarray:
    """Pixel-centre-correct scaling: pixel ``i``'s centre ``i`` maps to the
    centre of the pixel it falls in after resizing by ``factor``."""
    shift = 0.5 * factor - 0.5
    return np.array([[factor, 0.0, shift], [0.0, factor, shift]])


def translation(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]])


def footprint(matrix: np.ndarray, width: int, height: int) -> tuple[int, int, int, int] | None:
    """Pixels of the image (``width x height``) that the template square covers
    once mapped back through ``matrix`` (image -> template), with a pixel of
    margin for interpolation; None when it misses the image."""
    corners = np.array([[0, 0, 1], [SIZE, 0, 1], [0, SIZE, 1], [SIZE, SIZE, 1]], np.float64)
    points = corners @ invert(matrix).T
    x0 = max(0, int(np.floor(points[:, 0].min())) - 1)
    y0 = max(0, int(np.floor(points[:, 1].min())) - 1)
    x1 = min(width, int(np.ceil(points[:, 0].max())) + 2)
    y1 = min(height, int(np.ceil(points[:, 1].max())) + 2)
    if x0 >= x1 or y0 >= y1:
        return None
    return x0, y0, x1, y1
