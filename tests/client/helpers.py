"""Helpers of the client tests: tiny real images (numpy + libvips) and quick timings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyvips

from support.images import png_bytes
from upscayl_cloud.client import PollSchedule, RetryPolicy

MIB = 1024 * 1024
FAST = "quick-clear-4x"
#: Quick polls and retries: tiny images finish within a second.
QUICK_POLL = PollSchedule(initial=0.1, factor=1.5, maximum=0.5)
QUICK_RETRY = RetryPolicy(attempts=4, backoff_base=0.05, backoff_cap=0.2)


def image_bytes(width: int, height: int, suffix: str = ".png", seed: int = 0) -> bytes:
    """A small noisy RGB image encoded by libvips (``.png``, ``.jpg`` or ``.webp``)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return pyvips.Image.new_from_array(pixels).write_to_buffer(suffix)


def write_image(path: Path, width: int = 24, height: int = 16, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes(width, height, path.suffix, seed))
    return path


def big_png(path: Path, size: int) -> Path:
    """A 16 px PNG padded (with a chunk decoders skip) to about ``size`` bytes:
    multipart-sized, yet it upscales in milliseconds."""
    path.write_bytes(png_bytes(16, 16, padding=size))
    return path


def dimensions(path: Path) -> tuple[int, int]:
    image = pyvips.Image.new_from_file(str(path))
    return image.width, image.height
