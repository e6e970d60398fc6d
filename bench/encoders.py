"""WebP and JPEG encoder settings: time and size per effort and option.

An upscaled result is large (a 4x of a 1024² photo is 16 MP), so its encode
is a fixed cost on every image, next to the network's. libwebp's ``effort``
(0..6, libvips default 4) and libjpeg's Huffman optimisation, progressive
scans and chroma subsampling each trade time for bytes; this measures them on
one upscaled real photo, best of three, so the defaults in ``EncodeSettings``
rest on numbers, as ``bench/png.py`` does for PNG.

    PYTHONPATH=. .venv/bin/python bench/encoders.py [--edge 384] [--large 4096]

The photo (a crop of skimage's astronaut) is upscaled 4x by ncnn unless
``--backend`` says otherwise. ``--large`` also measures a picture of that
edge, closer to a typical result's size (0: skip), tiled from mirrored copies
of the upscaled photo: unlike an interpolated enlargement (much smoother,
so flattering to every encoder), it keeps the local texture of network output.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyvips
from skimage import data

from upscayl_cloud.engine.backends.select import CHOICES
from upscayl_cloud.engine.options import EngineSettings, UpscaleRequest, available_cores
from upscayl_cloud.engine.pipeline import upscale_file

#: Default qualities of the service (``EncodeSettings``): the options are
#: measured where they will be used.
WEBP_QUALITY = 90
JPEG_QUALITY = 92

#: JPEG variants: libvips's defaults first, then one change at a time, then
#: the combinations worth having. ``auto`` subsampling is 4:4:4 at Q >= 90.
JPEG_VARIANTS: list[tuple[str, dict[str, object]]] = [
    ("libvips default (no optimize, auto = 4:4:4 at Q92)", {}),
    ("optimize_coding", {"optimize_coding": True}),
    ("subsample on (4:2:0)", {"subsample_mode": "on"}),
    ("optimize_coding + 4:2:0", {"optimize_coding": True, "subsample_mode": "on"}),
    ("interlace (progressive)", {"interlace": True}),
    ("optimize_coding + interlace", {"optimize_coding": True, "interlace": True}),
    ("trellis_quant (mozjpeg only)", {"trellis_quant": True}),
]


def best_of(runs: int, encode: Callable[[], bytes]) -> tuple[float, bytes]:
    """Fastest of ``runs`` calls (the least disturbed by other work) and the output."""
    best, out = float("inf"), b""
    for _ in range(runs):
        start = time.perf_counter()
        out = encode()
        best = min(best, time.perf_counter() - start)
    return best, out


def upscaled_photo(edge: int, backend: str) -> pyvips.Image:
    """A real 4x upscale, as the service would produce: encoders behave
    differently on network output than on a camera's noisy pixels."""
    with tempfile.TemporaryDirectory() as tmp:
        source, result = Path(tmp) / "in.png", Path(tmp) / "out.png"
        pixels = np.asarray(data.astronaut())[:edge, :edge]
        pyvips.Image.new_from_array(pixels).pngsave(str(source))
        request = UpscaleRequest("quick-clear-4x", 4, "png")
        settings = EngineSettings(use_gpu=False, backend=backend)
        upscale_file(source, result, request, settings=settings)
        return pyvips.Image.new_from_file(str(result)).copy_memory()


def mirrored_mosaic(image: pyvips.Image, edge: int) -> pyvips.Image:
    """``image`` tiled to ``edge``² with alternate copies mirrored, so that
    the seams are continuous and every tile is upscaler output."""
    across = -(-edge // image.width)
    down = -(-edge // image.height)
    flipped_h = image.fliphor()
    row = [image if i % 2 == 0 else flipped_h for i in range(across)]
    rows = [pyvips.Image.arrayjoin(row, across=across)]
    for i in range(1, down):
        rows.append(rows[0].flipver() if i % 2 else rows[0])
    mosaic = pyvips.Image.arrayjoin(rows, across=1)
    return mosaic.crop(0, 0, edge, edge).copy_memory()


def measure(image: pyvips.Image, runs: int) -> None:
    """Print the WebP and JPEG tables for ``image``."""
    megapixels = image.width * image.height / 1e6
    print(f"\n### {image.width}x{image.height} ({megapixels:.1f} MP)\n")
    print(f"WebP, Q{WEBP_QUALITY}:\n")
    print("| effort | seconds (best of 3) | kB | MP/s |")
    print("|---|---:|---:|---:|")
    for effort in range(7):
        seconds, out = best_of(
            runs, lambda e=effort: image.webpsave_buffer(Q=WEBP_QUALITY, effort=e)
        )
        print(
            f"| {effort} | {seconds:.3f} | {len(out) / 1e3:.0f} | {megapixels / seconds:.1f} |",
            flush=True,
        )

    print(f"\nJPEG, Q{JPEG_QUALITY}:\n")
    print("| options | seconds (best of 3) | kB | MP/s | identical pixels to default |")
    print("|---|---:|---:|---:|---|")
    reference: bytes | None = None
    for name, options in JPEG_VARIANTS:
        seconds, out = best_of(runs, lambda o=options: image.jpegsave_buffer(Q=JPEG_QUALITY, **o))
        decoded = pyvips.Image.new_from_buffer(out, "").write_to_memory()
        reference = reference or decoded
        same = "yes" if decoded == reference else "no"
        print(
            f"| {name} | {seconds:.3f} | {len(out) / 1e3:.0f} | {megapixels / seconds:.1f} "
            f"| {same} |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--edge", type=int, default=384, help="crop edge before the 4x upscale")
    parser.add_argument("--large", type=int, default=4096, help="also at this edge (0: skip)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--backend", default="ncnn", choices=CHOICES, help="engine backend (default: ncnn)"
    )
    args = parser.parse_args()
    image = upscaled_photo(args.edge, args.backend)
    print(f"# WebP and JPEG encoders, {time.strftime('%F %H:%M %Z')}")
    command = " ".join(["PYTHONPATH=. .venv/bin/python bench/encoders.py", *sys.argv[1:]])
    print(f"- Command: `{command}`")
    print(
        f"- Machine: {platform.processor() or platform.machine()}, "
        f"{available_cores()} cores available; "
        f"libvips {'.'.join(str(pyvips.version(i)) for i in range(3))}, "
        f"Python {platform.python_version()}"
    )
    print(f"- Image: quick-clear-4x ({args.backend}) of a {args.edge}² crop of astronaut")
    measure(image, args.runs)
    if args.large:
        measure(mirrored_mosaic(image, args.large), args.runs)


if __name__ == "__main__":
    main()
