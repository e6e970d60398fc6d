"""Conversions between a network's floats and a plane's samples."""

from __future__ import annotations

import numpy as np
import pytest

from upscayl_cloud.engine import planes
from upscayl_cloud.engine.planes import chw_to_samples, to_samples


@pytest.mark.parametrize(("channels", "height", "width"), [(3, 37, 29), (1, 5, 3), (3, 1, 1)])
def test_banded_conversion_equals_the_whole_tile_one(monkeypatch, channels, height, width):
    """Several bands and a short last one (BAND_BYTES made small), values
    outside 0..1, exact halves, and a strided view as the pipeline passes."""
    monkeypatch.setattr(planes, "BAND_BYTES", channels * width * 4 * 4)  # 4 rows a band
    rng = np.random.default_rng(7)
    values = rng.uniform(-0.2, 1.2, (channels, height + 2, width + 3)).astype(np.float32)
    view = values[:, 1 : height + 1, 2 : width + 2]
    view[:, 0, 0] = np.float32(0.5 / planes.MAX_VALUE)  # a sample that rounds up to 1
    before = view.copy()

    samples = chw_to_samples(view)

    assert samples.dtype == planes.DTYPE and samples.shape == (height, width, channels)
    assert samples.flags.c_contiguous
    np.testing.assert_array_equal(samples, to_samples(view.transpose(1, 2, 0)))
    np.testing.assert_array_equal(view, before)  # the network's result is left as it was
    assert (samples[0, 0] == 1).all()
