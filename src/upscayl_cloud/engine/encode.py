"""Planes -> the file the client downloads (and its thumbnail).

Choices worth knowing:

* **Depth.** A 16-bit source gives a 16-bit PNG, so precision the client
  paid for is not thrown away; JPEG and WebP are 8-bit formats, so samples are
  rounded (``round(x / 257)``, the inverse of decoding's ``x * 257``).
* **Grey stays grey.** A grey source was widened to RGB for the networks; the
  three bands (which the networks return slightly unequal) are averaged back
  to one for PNG and JPEG. WebP has no grey mode, so a grey source's WebP is
  stored as RGB with that average in all three channels.
* **JPEG has no alpha**: transparent pixels are flattened onto
  ``EncodeSettings.jpeg_background`` (white by default), which is what most
  viewers show behind a transparent image. PNG and WebP keep alpha.
* **Metadata.** The ICC profile, EXIF block and resolution (DPI) of the
  source are written back, with the EXIF orientation set to 1: the pixels
  were rotated upright when decoded, and a stale tag would make viewers
  rotate them again. (Planes carry no resolution: without it, every output
  said 25.4 DPI.)
* **Encoder effort is measured, not guessed** (bench/README.md): PNG level 2
  with the "up" filter, WebP effort 2, JPEG without Huffman optimisation and
  with libvips's chroma subsampling (4:4:4 at quality 90 and above). A 4x
  result is large, and its encode is paid on every image.
* **Limits before work.** :func:`check_output_size` is meant to run before
  any network pass: finding out that WebP cannot hold 20000 pixels after an
  hour of upscaling wastes the hour.
"""

from __future__ import annotations

from pathlib import Path

import pyvips

from upscayl_cloud.engine.decode import ICC_GREY, ICC_RGB, DecodedImage
from upscayl_cloud.engine.errors import ImageTooLargeError, InvalidOptionError
from upscayl_cloud.engine.options import (
    MAX_OUTPUT_EDGE,
    OUTPUT_FORMATS,
    EncodeSettings,
    ImageLimits,
    OutputFormat,
)
from upscayl_cloud.engine.planeio import load_plane, save_atomically
from upscayl_cloud.engine.planes import MAX_VALUE, Plane

#: 0..65535 -> 0..255.
_TO_8_BIT = 255 / MAX_VALUE
#: Quality of thumbnails: they are previews, size matters more than fidelity.
THUMBNAIL_QUALITY = 80


def check_output_size(width: int, height: int, fmt: OutputFormat, limits: ImageLimits) -> None:
    """Refuse, before any work, an output the limits or the format cannot hold."""
    _check_format(fmt)
    if width < 1 or height < 1:
        raise ValueError(f"output size {width}x{height} is not positive")
    if width * height > limits.max_output_pixels:
        raise ImageTooLargeError(
            f"The output would be {width}x{height} = {width * height:,} pixels, above the limit "
            f"of {limits.max_output_pixels:,}: choose a smaller scale or a smaller image."
        )
    if fmt == "webp" and width * height > limits.max_webp_output_pixels:
        raise ImageTooLargeError(
            f"A WebP output of {width}x{height} pixels is above this server's WebP limit of "
            f"{limits.max_webp_output_pixels:,} pixels: choose png or jpg, or a smaller scale."
        )
    _check_format_edge(width, height, fmt)


def encode(
    color: Plane,
    alpha: Plane | None,
    image: DecodedImage,
    destination: Path,
    fmt: OutputFormat,
    quality: int | None,
    settings: EncodeSettings,
) -> int:
    """Write ``color`` (+ ``alpha``) as ``fmt`` at ``destination``; return its size in bytes.

    ``image`` is the decoded source, whose depth, greyness and metadata the
    output follows. The file appears at ``destination`` whole or not at all."""
    _check_format(fmt)
    if quality is not None and not 1 <= quality <= 100:
        raise InvalidOptionError(f"Quality must be between 1 and 100, not {quality}.")
    if color.bands != 3:
        raise ValueError(f"color plane must have 3 bands, not {color.bands}")
    _check_format_edge(color.width, color.height, fmt)

    pixels = load_plane(color)
    if alpha is not None:
        if (alpha.width, alpha.height, alpha.bands) != (color.width, color.height, 1):
            raise ValueError(f"alpha plane {alpha} does not match color plane {color}")
        pixels = pixels.bandjoin(load_plane(alpha))
        if fmt == "jpg":
            background = [channel * 257 for channel in settings.jpeg_background]
            pixels = pixels.flatten(background=background, max_alpha=MAX_VALUE)

    grey = image.source.is_grey and fmt != "webp"
    if image.source.is_grey:
        # The networks do not treat their three channels alike: a grey input
        # comes back with slightly unequal ones (a tint), so average them.
        averaged = pixels.extract_band(0, n=3).bandmean()
        if fmt == "webp":  # no grey mode: the average in all three channels
            averaged = averaged.bandjoin([averaged, averaged])
        pixels = averaged.bandjoin(pixels.extract_band(3)) if pixels.bands == 4 else averaged

    sixteen_bit = image.source.sixteen_bit and fmt == "png"
    if sixteen_bit:
        pixels = pixels.cast("ushort").copy(interpretation="grey16" if grey else "rgb16")
    else:
        # cast truncates, so +0.5 rounds to nearest.
        pixels = pixels.linear(_TO_8_BIT, 0.5).cast("uchar")
        pixels = pixels.copy(interpretation="b-w" if grey else "srgb")
    pixels = _with_metadata(pixels, image, ICC_GREY if grey else ICC_RGB)

    def save(path: str) -> None:
        if fmt == "png":
            pixels.pngsave(
                path,
                compression=settings.png_compression,
                filter=settings.png_filter,
                bitdepth=16 if sixteen_bit else 8,
            )
        elif fmt == "jpg":
            pixels.jpegsave(
                path,
                Q=quality or settings.jpeg_quality,
                optimize_coding=settings.jpeg_optimize_coding,
                subsample_mode=settings.jpeg_subsample,
            )
        else:
            pixels.webpsave(path, Q=quality or settings.webp_quality, effort=settings.webp_effort)

    return save_atomically(save, destination)


def make_thumbnail(source: Path, destination: Path, long_edge: int = 256) -> tuple[int, int]:
    """A WebP preview of an encoded result, at most ``long_edge`` on its long
    side (never enlarged); returns its ``(width, height)``.

    Reads ``source`` with libvips's thumbnail loader, which shrinks while
    decoding, so a huge result costs little memory. Only the colour profile
    is kept: a preview needs no camera metadata."""
    thumb = pyvips.Image.thumbnail(str(source), long_edge, height=long_edge, size="down")
    save_atomically(
        lambda path: thumb.webpsave(path, Q=THUMBNAIL_QUALITY, keep=pyvips.enums.ForeignKeep.ICC),
        destination,
    )
    return thumb.width, thumb.height


def _check_format(fmt: str) -> None:
    if fmt not in OUTPUT_FORMATS:
        raise InvalidOptionError(f"Unknown output format {fmt!r}: choose png, jpg or webp.")


def _check_format_edge(width: int, height: int, fmt: OutputFormat) -> None:
    limit = MAX_OUTPUT_EDGE.get(fmt)
    if limit is not None and max(width, height) > limit:
        name = "WebP" if fmt == "webp" else "JPEG"
        raise ImageTooLargeError(
            f"{name} cannot store an image of {width}x{height}: no edge may exceed {limit} "
            "pixels. Choose a smaller scale, or PNG."
        )


def _with_metadata(pixels: pyvips.Image, image: DecodedImage, colour_space: bytes) -> pyvips.Image:
    """Attach the source's profile, EXIF (orientation reset to 1) and resolution.

    The profile is attached only when it describes what is written: a grey
    source's grey profile on a WebP (stored as RGB) would misstate colours."""
    xres, yres = image.resolution
    pixels = pixels.copy(xres=xres, yres=yres)
    profile = image.icc_profile
    if profile is not None and profile[16:20] == colour_space:
        pixels.set_type(pyvips.GValue.blob_type, "icc-profile-data", profile)
    if image.exif is not None:
        pixels.set_type(pyvips.GValue.blob_type, "exif-data", image.exif)
        # libvips rewrites the EXIF block's orientation tag from this field when saving.
        pixels.set_type(pyvips.GValue.gint_type, "orientation", 1)
    return pixels
