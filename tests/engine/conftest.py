import numpy as np
import pytest
from skimage import data


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    """A real photo (scikit-image's ``chelsea``) as floats in 0..1."""
    return data.chelsea().astype(np.float32) / 255.0


@pytest.fixture(scope="session")
def face_photo() -> np.ndarray:
    """A real photo with a face and flat areas (``astronaut``), floats in 0..1."""
    return data.astronaut().astype(np.float32) / 255.0
