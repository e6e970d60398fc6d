"""Client image files -> planes, refusing bad input before it costs anything.

Order of checks, cheapest first: the file's first bytes (empty? which type?),
then the header as libvips reads it (dimensions against the limits), and only
then the pixels. A PNG of a hundred kilobytes can claim 30000x30000 pixels and
libvips opens it without complaint, so the pixel count is checked from the
header, before a single row is decoded.

Choices worth knowing:

* **Loader by sniffed type.** The JPEG, PNG or WebP loader is called by name
  for the type the magic bytes show, so libvips never guesses a format, and a
  file whose bytes disagree with its declared type is refused.
* **Strict decoding.** Loaders run with ``fail_on="error"``: a truncated or
  corrupt file fails instead of being silently padded with grey, which would
  be upscaled and charged as if it were the client's picture.
* **Animated images: first frame only.** Outputs are still images (PNG, JPEG,
  WebP without animation), and upscaling every frame would multiply the cost
  by the frame count. An animated WebP gives its first frame; libvips reads a
  PNG's default image (the IDAT), which for an APNG is the frame viewers that
  do not animate show. ``SourceImage.pages`` says how many frames there were.
* **Samples in 16 bits.** 8-bit samples become ``x * 257`` (0..255 onto
  0..65535 exactly); 16-bit PNGs keep their precision through every pass.
* **Grey is widened to RGB.** Networks take three channels, so grey (and grey
  with alpha) is replicated to three bands; ``is_grey`` makes the encoder
  write grey again.
* **CMYK becomes sRGB** (JPEG only), through the embedded profile or
  libvips's built-in CMYK profile; the CMYK profile is then dropped since it
  no longer describes the pixels.
* **Upright pixels.** EXIF orientation is applied while decoding, so every
  later step works on the image as it is meant to be seen; the encoder resets
  the tag to 1.
* **Progressive JPEGs: at most 500 scans.** libjpeg goes over every block of
  the image once per scan, and a scan of nothing but end-of-block runs costs
  a few bytes: an 820 KB file of 10,000 scans over a 47 MP frame took 77 s
  to decode, a 100 MB one would take hours, in one libvips call that no
  cancellation reaches. Real encoders write 10 or so (mozjpeg's optimised
  ones a few dozen); libjpeg-turbo's own fuzzers stop at 500, and so does
  :func:`decode`, after a walk of the markers (the entropy-coded data is
  searched for the next marker in C, not parsed): milliseconds for a photo,
  1.3-2.5 s for a 145 MB 49 MP one of noise (restart markers the slowest).
* **Resolution (DPI) is kept**, as the source states it (JFIF density, PNG
  pHYs, EXIF), swapped with the axes by a 90 degree orientation; a source
  that states none (a PNG pHYs without unit, an impossible density among
  them) gets 72 DPI, libvips's own default for JPEG and PNG. The
  output is then ``scale`` times larger on paper too, as after any resampling
  that keeps the resolution.
"""

from __future__ import annotations

import mmap
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import pyvips

from upscayl_cloud.engine import sniff
from upscayl_cloud.engine.errors import (
    ImageTooLargeError,
    InvalidImageError,
    UnsupportedImageTypeError,
)
from upscayl_cloud.engine.options import ImageLimits
from upscayl_cloud.engine.planeio import (
    as_os_error,
    load_plane,
    new_plane_path,
    save_loaded_plane,
    save_plane,
)
from upscayl_cloud.engine.planes import Plane

_LOADERS = {sniff.JPEG: "jpegload", sniff.PNG: "pngload", sniff.WEBP: "webpload"}
_NAMES = {sniff.JPEG: "JPEG", sniff.PNG: "PNG", sniff.WEBP: "WebP"}
#: EXIF orientations that rotate by 90 or 270 degrees, swapping width and height.
_TRANSPOSING = frozenset({5, 6, 7, 8})
#: ICC colour-space signatures (header bytes 16..20) the encoder can attach.
ICC_RGB = b"RGB "
ICC_GREY = b"GRAY"
#: Largest profile carried into a result: Pillow refuses a PNG with more
#: (``PngImagePlugin.MAX_TEXT_CHUNK``); printer profiles can hold several MB.
MAX_ICC_BYTES = 1 << 20
#: Pixels per millimetre when the source states no resolution: 72 DPI.
DEFAULT_RESOLUTION = 72 / 25.4
#: Reach of the visible colour carried under fully transparent pixels
#: (:func:`_fill_hidden`): a Gaussian's sigma, in source pixels, wider than
#: what the networks' first layers see of a pixel's neighbours.
HIDDEN_FILL_SIGMA = 8.0
#: The most pixels per millimetre libvips takes (``vips_copy``'s ``xres``).
MAX_RESOLUTION = 1_000_000.0
#: Chunks looked at for pHYs before giving up (real files have a handful).
MAX_PNG_CHUNKS_BEFORE_DATA = 1024
#: Most scans (SOS markers) a JPEG may have: libjpeg-turbo's fuzzers' limit
#: (``TJPARAM_SCANLIMIT``); every scan costs a pass over the whole image.
MAX_JPEG_SCANS = 500
#: Most marker segments walked outside the entropy-coded data (restart
#: markers inside it are not counted): real files have a few dozen, and each
#: one is a step of Python here.
MAX_JPEG_MARKERS = 65536
#: After a scan's header: the next marker that is not a stuffed 0xFF00 byte
#: or a restart marker (RSTn), after any fill bytes; matched as the last
#: 0xFF of a run with its marker byte, which is linear on a long run of
#: 0xFF (``\xff+`` with a lookahead backtracked over the whole run from every
#: start, quadratic, holding the GIL: 16 KB of 0xFF took 2.8 s).
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


@dataclass(frozen=True)
class SourceImage:
    """What the header says, before any pixel is decoded."""

    #: As displayed: after EXIF orientation (a 90 degree rotation swaps them).
    width: int
    height: int
    #: Sniffed from the bytes, never taken from the client.
    mime_type: str
    has_alpha: bool
    is_grey: bool
    sixteen_bit: bool
    #: Frames in the file; only the first is decoded.
    pages: int


@dataclass
class DecodedImage:
    """Planes of a decoded source, plus what the encoder needs to write it back."""

    #: 3 bands, upright, grey replicated, CMYK converted to sRGB.
    color: Plane
    #: 1 band when the source has alpha.
    alpha: Plane | None
    source: SourceImage
    #: The source's colour profile, kept only when it describes ``color``'s
    #: values (RGB, or grey for a grey source).
    icc_profile: bytes | None
    #: The source's EXIF block, kept only when libvips could parse it.
    exif: bytes | None
    #: Pixels per millimetre of ``color``, horizontally and vertically.
    resolution: tuple[float, float] = (DEFAULT_RESOLUTION, DEFAULT_RESOLUTION)


def probe(path: Path, limits: ImageLimits, declared_type: str | None = None) -> SourceImage:
    """Check a client file from its first bytes and header; decode nothing.

    Raises InvalidImageError (empty, not an image, truncated header, type
    mismatch), UnsupportedImageTypeError (an image of another kind) or
    ImageTooLargeError (over ``limits``)."""
    _image, source = _open(Path(path), limits, declared_type)
    return source


def decode(
    path: Path, workdir: Path, limits: ImageLimits, declared_type: str | None = None
) -> DecodedImage:
    """Decode a client file into planes under ``workdir``.

    Probes first (see :func:`probe`). Any libvips failure while reading the
    client's bytes is an InvalidImageError: those bytes are the only thing
    that differs between a file that decodes and one that does not."""
    image, source = _open(Path(path), limits, declared_type)
    if source.mime_type == sniff.JPEG:
        _check_jpeg_scans(Path(path))
    orientation = _orientation(image)
    cmyk = image.interpretation == "cmyk"
    icc = None if cmyk else _icc_profile(image, ICC_GREY if source.is_grey else ICC_RGB)
    if icc is not None and len(icc) > MAX_ICC_BYTES:
        # Too large to travel with the result (Pillow refuses a PNG whose
        # profile holds more than 1 MiB): the colours are converted to sRGB
        # here, with libvips's own profile, and the result carries none. A
        # grey source keeps its values (a grey profile describes a tone
        # curve; converting would make it colour).
        if not source.is_grey:
            image = image.icc_transform("srgb", embedded=True, depth=16)
        icc = None
    exif = _exif(image)
    resolution = _resolution(image, source, orientation, Path(path), exif)
    if exif is not None and orientation in _TRANSPOSING:
        # libvips saves the EXIF block's resolution over the image's own.
        exif = _swap_exif_resolution(exif)
    if orientation == 1 and not source.has_alpha:
        color = _decode_into(image, source, new_plane_path(workdir, "color"))
        return DecodedImage(color, None, source, icc, exif, resolution)

    # Rotating needs random access and splitting off alpha would read the
    # file twice, while the loader streams once from top to bottom: stage the
    # pixels in a plane, then rotate and split from that plane.
    staged = _decode_into(image, source, new_plane_path(workdir, "staged"))
    try:
        upright = load_plane(staged).copy()
        upright.set_type(pyvips.GValue.gint_type, "orientation", orientation)
        upright = upright.autorot()
        color_bands = upright.extract_band(0, n=3)
        alpha = None
        if source.has_alpha:
            alpha_band = upright.extract_band(3)
            color_bands = _fill_hidden(color_bands, alpha_band)
            alpha = save_plane(alpha_band, new_plane_path(workdir, "alpha"))
        color = save_plane(color_bands, new_plane_path(workdir, "color"))
    finally:
        staged.path.unlink(missing_ok=True)
    return DecodedImage(color, alpha, source, icc, exif, resolution)


def _fill_hidden(color: pyvips.Image, alpha: pyvips.Image) -> pyvips.Image:
    """``color`` with every fully transparent pixel's colour replaced by the
    weighted average of the visible colour around it.

    What a transparent pixel stores is arbitrary (magenta, a previous edit,
    a cut-out's old background), but a network reads it with its
    neighbours, and bled it into the visible edge: 46 of 255 levels of
    hidden magenta on an opaque grey next to it. The visible colour carried
    outwards makes the edge's surroundings what the eye expects there.
    Pixels far from anything visible become black; nothing shows them. An
    image with no fully transparent pixel is returned unchanged (one pass
    over the alpha plane to know)."""
    if alpha.min() > 0:
        return color
    seen = alpha > 0
    weight = (seen / 255).cast("float")
    summed = (color.cast("float") * weight).gaussblur(HIDDEN_FILL_SIGMA, precision="float")
    total = weight.gaussblur(HIDDEN_FILL_SIGMA, precision="float")
    filled = (summed / total).rint()  # libvips: x / 0 is 0
    return seen.ifthenelse(color, filled).cast("ushort").copy(interpretation="rgb16")


def _open(
    path: Path, limits: ImageLimits, declared_type: str | None
) -> tuple[pyvips.Image, SourceImage]:
    with open(path, "rb") as handle:
        head = handle.read(sniff.HEAD_BYTES)
    if not head:
        raise InvalidImageError("The file is empty.")
    mime_type = sniff.sniff_mime_type(head)
    if mime_type is None:
        other = sniff.other_image_kind(head)
        if other is not None:
            raise UnsupportedImageTypeError(
                f"{other} images are not supported: send a JPEG, PNG or WebP image."
            )
        raise InvalidImageError("The file is not a JPEG, PNG or WebP image.")
    if declared_type is not None and sniff.normalize_mime_type(declared_type) != mime_type:
        raise InvalidImageError(
            f"The file was declared as {declared_type} but its content is {mime_type}."
        )
    name = _NAMES[mime_type]
    try:
        image = _load(_LOADERS[mime_type], path)
    except pyvips.Error as err:
        raise InvalidImageError(
            f"The {name} header could not be read: the file is truncated or corrupt."
        ) from err

    width, height = image.width, image.height
    if max(width, height) > limits.max_source_edge:
        raise ImageTooLargeError(
            f"The image is {width}x{height} pixels; no edge may exceed "
            f"{limits.max_source_edge} pixels."
        )
    if width * height > limits.max_source_pixels:
        raise ImageTooLargeError(
            f"The image is {width}x{height} = {width * height:,} pixels; "
            f"the limit is {limits.max_source_pixels:,} pixels."
        )
    if image.format not in ("uchar", "ushort"):
        raise UnsupportedImageTypeError(
            f"{name} images with {image.format} samples are not supported."
        )
    has_alpha = bool(image.hasalpha())
    colour_bands = image.bands - int(has_alpha)
    cmyk = image.interpretation == "cmyk" and image.bands == 4
    if colour_bands not in (1, 3) and not cmyk:
        raise UnsupportedImageTypeError(
            f"{name} images with {image.bands} bands ({image.interpretation}) are not supported."
        )
    if _orientation(image) in _TRANSPOSING:
        width, height = height, width
    pages = image.get("n-pages") if image.get_typeof("n-pages") else 1
    source = SourceImage(
        width=width,
        height=height,
        mime_type=mime_type,
        has_alpha=has_alpha,
        is_grey=colour_bands == 1,
        sixteen_bit=image.format == "ushort",
        pages=max(1, int(pages)),
    )
    return image, source


def _load(loader: str, path: Path) -> pyvips.Image:
    """Call ``loader`` on the file at ``path``, streaming, strict.

    pyvips hands libvips a file name as UTF-8, and a name that is not
    (``caf\\xe9.png`` from a Latin-1 disk, a ``str`` with lone surrogates
    here) raised UnicodeEncodeError: it ended a whole local run. Such a file
    is opened here and given to the ``_source`` loader by its descriptor
    instead. Not its name as bytes: libvips puts a file's name in some
    messages (a file gone before libvips opened it, for one), pyvips reads
    them as UTF-8, and the failed read left them in libvips's error buffer,
    spoiling every later error of the process. Other names go by name, as
    they always went: nothing changes for them.
    """
    # memory=True: a loader that cannot stream (WebP's decodes the whole
    # frame) would otherwise copy a source over 100 MB of pixels into an
    # unnamed file in TMPDIR, a disk the work-space check never sees, and
    # a full one there failed the client's file as corrupt. The frame is
    # in memory all the same; JPEG and PNG stream and ignore it.
    options = {"access": "sequential", "fail_on": "error", "memory": True}
    name = str(path)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            source = pyvips.Source.new_from_descriptor(descriptor)  # libvips keeps a dup
        finally:
            os.close(descriptor)
        return pyvips.Operation.call(f"{loader}_source", source, **options)
    return pyvips.Operation.call(loader, name, **options)


def _check_jpeg_scans(path: Path) -> None:
    """Refuse a JPEG of more than :data:`MAX_JPEG_SCANS` scans before libjpeg
    decodes it (see the module's notes). The walk follows segment lengths up
    to the end-of-image marker, as libjpeg does; a file that is too short or
    out of step is left for libjpeg to judge."""
    scans = markers = 0
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        pos, size = 2, len(data)
        while pos + 4 <= size and markers < MAX_JPEG_MARKERS:
            # Not a marker where the last segment ended (libjpeg skips such
            # bytes, "FF 00" too, as extraneous data): look for the next one,
            # or scans could hide behind a junk "FF 00" uncounted.
            if data[pos] != 0xFF or data[pos + 1] == 0x00:
                found = _NEXT_MARKER.search(data, pos)
                if found is None:
                    return
                pos = found.start()
                continue
            marker = data[pos + 1]
            if marker == 0xFF:
                pos += 1
                continue
            markers += 1
            if marker == 0xD9:
                return
            if marker == 0x01 or 0xD0 <= marker <= 0xD7:
                pos += 2
                continue
            pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
            if marker == 0xDA:
                scans += 1
                if scans > MAX_JPEG_SCANS:
                    raise InvalidImageError(
                        f"The JPEG image has more than {MAX_JPEG_SCANS} scans (progressive "
                        "passes); save it again as a baseline or ordinary progressive JPEG."
                    )
                found = _NEXT_MARKER.search(data, pos)
                if found is None:
                    return
                pos = found.start()
    if markers >= MAX_JPEG_MARKERS:
        raise InvalidImageError(
            f"The JPEG image has more than {MAX_JPEG_MARKERS} marker segments; "
            "save it again without the extra segments."
        )


def _widen(image: pyvips.Image, source: SourceImage) -> pyvips.Image:
    """The lazy pipeline from the loader to 3 (+1 alpha) ushort bands."""
    if image.interpretation == "cmyk":
        # depth=16 keeps the conversion's precision instead of rounding to 8 bits.
        return image.icc_transform("srgb", input_profile="cmyk", embedded=True, depth=16)
    if image.format == "uchar":
        image = (image.cast("ushort") * 257).cast("ushort")
    if source.is_grey:
        grey = image.extract_band(0)
        bands = [grey, grey]
        if source.has_alpha:
            bands.append(image.extract_band(1))
        image = grey.bandjoin(bands)
    return image.copy(interpretation="rgb16")


def _decode_into(image: pyvips.Image, source: SourceImage, path: Path) -> Plane:
    """Stream the loader's pixels, widened, into a plane at ``path``."""
    try:
        return save_loaded_plane(_widen(image, source), path)
    except pyvips.Error as err:
        path.unlink(missing_ok=True)
        if _write_failed(err):
            # Our disk, not their bytes: a server error, not a 4xx.
            raise as_os_error(err, path) from err
        name = _NAMES[source.mime_type]
        raise InvalidImageError(
            f"The {name} image could not be decoded: the file is truncated or corrupt."
        ) from err


def _write_failed(err: pyvips.Error) -> bool:
    """Decoding writes only into our own work directory, so a failed write
    (full disk, quota, a vanished folder) is ours; libvips says so in words."""
    text = f"{err.message} {err.detail}".lower()
    return any(
        words in text for words in ("unable to open for write", "write error", "write failed")
    )


def _orientation(image: pyvips.Image) -> int:
    if not image.get_typeof("orientation"):
        return 1
    value = int(image.get("orientation"))
    return value if 1 <= value <= 8 else 1


def _resolution(
    image: pyvips.Image, source: SourceImage, orientation: int, path: Path, exif: bytes | None
) -> tuple[float, float]:
    """The source's pixels per millimetre, upright; 72 DPI where it states
    none. libvips says 1.0 where a format has no resolution of its own
    (WebP: read from its EXIF here, which libvips's WebP loader does not
    do; its ``exif-ifd0-XResolution`` field is there even when the EXIF has
    no such tag), which read back would be 25.4 DPI, and passes a PNG pHYs
    of unit 0 (an aspect ratio, no unit) through as if its numbers were per
    millimetre (3000:3000 became 76,200 DPI). A value libvips cannot write
    back (over 10^6 per millimetre: a pHYs of 2^32 - 1) is no resolution
    either."""
    if source.mime_type == sniff.WEBP:
        xres, yres = _exif_resolution(exif) or (0.0, 0.0)
    elif source.mime_type == sniff.PNG and _png_density_unit(path) in (0, None):
        xres, yres = 0.0, 0.0  # no pHYs, or one without a unit: none stated
    else:
        xres, yres = image.xres, image.yres
    xres = xres if 0 < xres <= MAX_RESOLUTION else DEFAULT_RESOLUTION
    yres = yres if 0 < yres <= MAX_RESOLUTION else DEFAULT_RESOLUTION
    return (yres, xres) if orientation in _TRANSPOSING else (xres, yres)


def _png_density_unit(path: Path) -> int | None:
    """The unit byte of a PNG's pHYs chunk (0: none, 1: metre), or None
    when there is none before the image data. Walks the chunk headers,
    seeking over their bodies, as the PNG format puts pHYs before IDAT."""
    with path.open("rb") as handle:
        handle.seek(8)
        for _ in range(MAX_PNG_CHUNKS_BEFORE_DATA):
            header = handle.read(8)
            if len(header) < 8:
                return None
            length, kind = struct.unpack(">I4s", header)
            if kind == b"pHYs" and length == 9:
                body = handle.read(9)
                return body[8] if len(body) == 9 else None
            if kind in (b"IDAT", b"IEND"):
                return None
            handle.seek(length + 4, 1)  # the body and its CRC
    return None


@dataclass(frozen=True)
class _Ifd0:
    """IFD0 of an EXIF block: its byte order, where its offsets count from,
    and where each tag's 12-byte entry starts."""

    order: str
    base: int
    entries: dict[int, int]


def _ifd0(exif: bytes) -> _Ifd0 | None:
    start = 6 if exif.startswith(b"Exif\0\0") else 0
    order = {b"II": "<", b"MM": ">"}.get(exif[start : start + 2])
    if order is None:
        return None
    try:
        ifd = start + struct.unpack_from(order + "I", exif, start + 4)[0]
        count = struct.unpack_from(order + "H", exif, ifd)[0]
        entries = {}
        for index in range(count):
            offset = ifd + 2 + 12 * index
            entries[struct.unpack_from(order + "H", exif, offset)[0]] = offset
    except struct.error:
        return None
    return _Ifd0(order, start, entries)


#: EXIF's ResolutionUnit (inch unless stated; 1 is none) in millimetres.
_EXIF_UNIT_MM = {2: 25.4, 3: 10.0}
_EXIF_SHORT, _EXIF_RATIONAL = 3, 5


def _exif_resolution(exif: bytes | None) -> tuple[float, float] | None:
    """IFD0's XResolution and YResolution in pixels per millimetre, or None
    where the block does not state both (or says they have no unit)."""
    if not exif or (ifd := _ifd0(exif)) is None:
        return None
    try:
        unit = 2
        if (entry := ifd.entries.get(0x0128)) is not None:
            kind, _count = struct.unpack_from(ifd.order + "HI", exif, entry + 2)
            if kind == _EXIF_SHORT:
                unit = struct.unpack_from(ifd.order + "H", exif, entry + 8)[0]
        per_mm = []
        for tag in (0x011A, 0x011B):
            if (entry := ifd.entries.get(tag)) is None:
                return None
            kind, _count, where = struct.unpack_from(ifd.order + "HII", exif, entry + 2)
            numerator, denominator = struct.unpack_from(ifd.order + "II", exif, ifd.base + where)
            if kind != _EXIF_RATIONAL or denominator == 0 or unit not in _EXIF_UNIT_MM:
                return None
            per_mm.append(numerator / denominator / _EXIF_UNIT_MM[unit])
    except struct.error:
        return None
    return per_mm[0], per_mm[1]


def _swap_exif_resolution(exif: bytes) -> bytes:
    """``exif`` with IFD0's XResolution and YResolution exchanged (their
    type, count and value offset: the values stay where they are), or
    unchanged where the block does not hold both."""
    ifd = _ifd0(exif)
    if ifd is None or not {0x011A, 0x011B} <= ifd.entries.keys():
        return exif
    x, y = ifd.entries[0x011A] + 2, ifd.entries[0x011B] + 2
    if max(x, y) + 10 > len(exif):
        return exif
    swapped = bytearray(exif)
    swapped[x : x + 10], swapped[y : y + 10] = exif[y : y + 10], exif[x : x + 10]
    return bytes(swapped)


def _icc_profile(image: pyvips.Image, colour_space: bytes) -> bytes | None:
    """The embedded profile if it is structurally sound and describes
    ``colour_space``; a profile that does not would make every viewer
    misread the output's colours, and a malformed one could fail the encoder
    after all the upscaling work is done."""
    if not image.get_typeof("icc-profile-data"):
        return None
    profile = bytes(image.get("icc-profile-data"))
    if len(profile) < 128 or profile[36:40] != b"acsp":
        return None
    declared_size = int.from_bytes(profile[:4], "big")
    if not 128 <= declared_size <= len(profile) or profile[16:20] != colour_space:
        return None
    return profile


def _exif(image: pyvips.Image) -> bytes | None:
    """The EXIF block, if libvips parsed it (it sets ``exif-ifd*`` fields
    then); a block it cannot parse would be copied blind into the output."""
    if not image.get_typeof("exif-data"):
        return None
    if not any(field.startswith("exif-ifd") for field in image.get_fields()):
        return None
    return bytes(image.get("exif-data"))
