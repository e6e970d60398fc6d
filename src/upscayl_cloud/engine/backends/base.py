"""What every backend's network does, and the checks they all share.

The tiling code sees only this interface: ``3 x H x W`` floats in 0..1 in,
``3 x sH' x sW'`` out, plus ``extract`` of an intermediate blob and
``injected`` blobs for Real-CUGAN's synchronised global means.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping

import numpy as np

from upscayl_cloud.engine.geometry import WidthTimings
from upscayl_cloud.engine.networks import NetworkSpec


def cpu_device(precision: str, threads: int, streams: int = 1) -> str:
    """How a CPU backend describes itself, e.g. ``CPU bf16, 2 threads``."""
    text = f"CPU {precision}, {threads} thread{'' if threads == 1 else 's'}"
    return text if streams == 1 else f"{text} x {streams} streams"


class Network(ABC):
    """One loaded network, safe to share between the threads of a process."""

    #: The runtime's name, as in the ``backend`` setting.
    backend: str = ""

    def __init__(self, spec: NetworkSpec) -> None:
        self.spec = spec

    @property
    @abstractmethod
    def device(self) -> str:
        """Where and at which precision it runs, for logs and ``doctor``."""

    @property
    def on_gpu(self) -> bool:
        return False

    @property
    def kib_per_pixel(self) -> int:
        """Peak memory of one call per input pixel: sizes automatic tiles."""
        return self.spec.kib_per_pixel

    @property
    def width_timings(self) -> WidthTimings | None:
        """Relative cost per pixel by source width, for a runtime whose speed
        has cliffs at some widths (``geometry.TileRule.widths``)."""
        return None

    @abstractmethod
    def _forward(
        self, chw: np.ndarray, blob: str, injected: Mapping[str, np.ndarray]
    ) -> np.ndarray:
        """The blob ``blob`` for one ``3 x H x W`` input, without a batch axis."""

    @abstractmethod
    def release_memory(self) -> None:
        """Give working memory back between passes."""

    def check_input(self, height: int, width: int) -> None:
        """Refuse a size the network cannot take (ncnn crashes on some)."""
        spec = self.spec
        for edge in (height, width):
            core = edge - 2 * spec.context
            if core < spec.align or core % spec.align:
                raise ValueError(
                    f"{spec.key} cannot take a {width}x{height} input: the size less "
                    f"2x{spec.context} context must be a positive multiple of {spec.align}"
                )

    def run(self, chw: np.ndarray, injected: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """Infer one tile. ``injected`` overrides intermediate blobs by name
        (used to give Real-CUGAN's tiles the whole image's global means)."""
        spec = self.spec
        _, height, width = chw.shape
        self.check_input(height, width)
        result = self._forward(chw, spec.output_blob, injected or {})
        if spec.nearest_residual:
            result = result + _nearest(chw, spec.context, spec.scale)
        expected = (
            3,
            spec.scale * (height - 2 * spec.context),
            spec.scale * (width - 2 * spec.context),
        )
        if result.shape != expected:
            raise RuntimeError(f"{spec.key} returned {result.shape}, expected {expected}")
        return result

    def extract(self, chw: np.ndarray, blob: str, injected: Mapping[str, np.ndarray]) -> np.ndarray:
        """Run the network only as far as ``blob`` and return it."""
        _, height, width = chw.shape
        self.check_input(height, width)
        return self._forward(chw, blob, injected)


def _nearest(chw: np.ndarray, context: int, scale: int) -> np.ndarray:
    """The input without its context, upscaled by pixel repetition."""
    core = chw[:, context : chw.shape[1] - context, context : chw.shape[2] - context]
    return np.repeat(np.repeat(core, scale, axis=1), scale, axis=2)
