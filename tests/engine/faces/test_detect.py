"""MTCNN on real photos from scikit-image: faces where there are faces, none elsewhere."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from upscayl_cloud.engine.faces import detect
from upscayl_cloud.engine.faces.detect import detect_faces


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _rgb(image: np.ndarray) -> np.ndarray:
    return np.dstack([image] * 3) if image.ndim == 2 else image


@pytest.mark.parametrize(
    ("name", "box"),
    # Boxes drawn by hand around forehead-to-chin, ear to ear.
    [("astronaut", (175, 55, 265, 175)), ("camera", (195, 115, 255, 195))],
)
def test_finds_the_face_in_real_photos(name: str, box: tuple[int, ...]) -> None:
    faces = detect_faces(_rgb(getattr(data, name)()))
    assert len(faces) == 1
    (face,) = faces
    assert face.score > 0.95
    assert _iou(face.box, box) > 0.6, face.box
    x0, y0, x1, y1 = face.box
    marks = face.landmarks
    assert marks.shape == (5, 2)
    assert ((marks[:, 0] > x0) & (marks[:, 0] < x1) & (marks[:, 1] > y0) & (marks[:, 1] < y1)).all()
    # Eyes above the nose, above the mouth; image-left before image-right.
    assert marks[0, 0] < marks[1, 0] and marks[3, 0] < marks[4, 0]
    assert max(marks[0, 1], marks[1, 1]) < marks[2, 1] < min(marks[3, 1], marks[4, 1])


def test_finds_a_face_at_any_place_and_size() -> None:
    face = data.astronaut()[40:200, 150:290]
    canvas = np.full((700, 900, 3), 200, np.uint8)
    big = np.kron(face, np.ones((2, 2, 1), np.uint8))  # 320 x 280
    canvas[300:620, 560:840] = big
    (found,) = detect_faces(canvas)
    x0, y0, x1, y1 = found.box
    assert 560 < x0 < x1 < 840 and 300 < y0 < y1 < 620
    assert x1 - x0 > 120


@pytest.mark.parametrize("name", ["coffee", "chelsea", "rocket", "immunohistochemistry"])
def test_no_faces_in_photos_without_people(name: str) -> None:
    assert detect_faces(getattr(data, name)()) == []


def test_flat_and_tiny_images_have_no_faces() -> None:
    assert detect_faces(np.full((300, 300, 3), 128, np.uint8)) == []
    assert detect_faces(np.zeros((8, 8, 3), np.uint8)) == []


def _crowd(rows: int, columns: int) -> np.ndarray:
    """``astronaut``'s face, 60 px wide, tiled: a small group photo."""
    face = data.astronaut()[20:200, 150:300]
    tile = cv2.resize(face, (60, 72), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(np.tile(tile, (rows, columns, 1)))


class _Counting:
    """A real detector session that notes the batch size of each run."""

    def __init__(self, session: object, batches: list[int]) -> None:
        self._session = session
        self._batches = batches

    def get_inputs(self) -> object:
        return self._session.get_inputs()  # type: ignore[attr-defined]

    def run(self, outputs: object, feeds: dict[str, np.ndarray]) -> object:
        self._batches.extend(len(v) for v in feeds.values())
        return self._session.run(outputs, feeds)  # type: ignore[attr-defined]


def test_r_net_and_o_net_run_in_chunks_and_find_what_one_batch_finds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """All candidates in one batch took a crowd photo to 2.7 GB."""
    image = _crowd(2, 3)
    whole = detect.detect_faces(image, 24)
    assert len(whole) == 6
    pnet, rnet, onet = detect._sessions(1)
    batches: list[int] = []
    counted = (pnet, _Counting(rnet, batches), _Counting(onet, batches))
    monkeypatch.setattr(detect, "_sessions", lambda threads: counted)
    monkeypatch.setattr(detect, "CHUNK", 4, raising=False)
    chunked = detect.detect_faces(image, 24)
    assert len(batches) > 2 and max(batches) == 4
    assert [f.box for f in chunked] == [f.box for f in whole]
    assert [f.score for f in chunked] == [f.score for f in whole]
    for a, b in zip(chunked, whole, strict=True):
        np.testing.assert_array_equal(a.landmarks, b.landmarks)


def test_only_the_most_confident_proposals_go_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """A crowd gave R-Net and O-Net 5,800 candidates; the cap keeps the
    best-scored, not the first found."""
    image = _crowd(2, 3)
    pnet = detect._sessions(1)[0]
    every = detect._propose(pnet, image, 24)
    scores = every[:, 4]
    assert len(every) > 10 and (np.diff(scores) <= 0).all()  # best first
    monkeypatch.setattr(detect, "MAX_CANDIDATES", 10, raising=False)
    kept = detect._propose(pnet, image, 24)
    np.testing.assert_array_equal(kept, every[:10])
    assert kept[:, 4].min() >= scores[10:].max()
