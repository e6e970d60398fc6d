"""Image files in and out of planes, on real files written by libvips."""

from __future__ import annotations

import contextlib
import errno
import os
import struct
import zlib
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import pyvips
from skimage import data

from upscayl_cloud.engine import imageio, planeio
from upscayl_cloud.engine.errors import (
    EngineError,
    ImageTooLargeError,
    InvalidImageError,
    InvalidOptionError,
    UnsupportedImageTypeError,
)
from upscayl_cloud.engine.options import MAX_OUTPUT_EDGE, EncodeSettings, ImageLimits
from upscayl_cloud.engine.planes import Plane

LIMITS = ImageLimits()
SETTINGS = EncodeSettings()

# Small crops keep the whole file fast; coffee is not symmetric, so a wrong
# rotation or flip cannot go unnoticed.
COFFEE = data.coffee()[100:148, 200:272]  # 72 x 48, RGB uint8
ASTRONAUT = data.astronaut()[:64, :64]


def vips_image(array: np.ndarray, **metadata: int) -> pyvips.Image:
    array = array if array.ndim == 3 else array[:, :, None]
    image = pyvips.Image.new_from_array(np.ascontiguousarray(array))
    if array.dtype == np.uint16:
        image = image.copy(interpretation="rgb16" if array.shape[2] >= 3 else "grey16")
    elif array.shape[2] <= 2:
        image = image.copy(interpretation="b-w")
    else:
        image = image.copy(interpretation="srgb")
    for name, value in metadata.items():
        image.set_type(pyvips.GValue.gint_type, name.replace("_", "-"), value)
    return image


def write(path: Path, array: np.ndarray, **options: object) -> Path:
    metadata = {k: options.pop(k) for k in ("orientation", "page_height") if k in options}
    image = vips_image(array, **metadata)
    {".png": image.pngsave, ".jpg": image.jpegsave, ".webp": image.webpsave}[path.suffix](
        str(path), **options
    )
    return path


def load(path: Path) -> pyvips.Image:
    return pyvips.Image.new_from_file(str(path))


def pixels(path: Path) -> np.ndarray:
    image = load(path)
    return image.numpy().reshape(image.height, image.width, image.bands)


def round_trip(
    tmp_path: Path,
    source: Path,
    fmt: str = "png",
    quality: int | None = None,
    settings: EncodeSettings = SETTINGS,
) -> Path:
    decoded = imageio.decode(source, tmp_path, LIMITS)
    out = tmp_path / f"out.{fmt}"
    size = imageio.encode(decoded.color, decoded.alpha, decoded, out, fmt, quality, settings)
    assert size == out.stat().st_size > 0
    return out


# -- sniffing ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "mime"), [(".jpg", "image/jpeg"), (".png", "image/png"), (".webp", "image/webp")]
)
def test_sniff_recognises_accepted_types(tmp_path, suffix, mime):
    path = write(tmp_path / f"a{suffix}", ASTRONAUT)
    assert imageio.sniff_mime_type(path.read_bytes()[:32]) == mime


@pytest.mark.parametrize(
    "head", [b"", b"GIF89a\x01\x00", b"RIFF\x00\x00\x00\x00WAVEfmt ", b"hello world", b"\xff\xd8"]
)
def test_sniff_rejects_everything_else(head):
    assert imageio.sniff_mime_type(head) is None


# -- refusing bad input -----------------------------------------------------


def test_empty_file_is_invalid(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(InvalidImageError, match="empty"):
        imageio.probe(path, LIMITS)


def test_text_named_png_is_invalid(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n" * 10)
    with pytest.raises(InvalidImageError):
        imageio.decode(path, tmp_path, LIMITS)


@pytest.mark.parametrize(
    ("suffix", "kind"), [(".gif", "GIF"), (".tif", "TIFF"), (".v", "not a JPEG, PNG or WebP")]
)
def test_other_image_kinds_are_unsupported(tmp_path, suffix, kind):
    path = tmp_path / f"image{suffix}"
    vips_image(ASTRONAUT).write_to_file(str(path))
    # A kind we know gets "unsupported"; a kind we do not, "invalid".
    error = InvalidImageError if suffix == ".v" else UnsupportedImageTypeError
    with pytest.raises(error, match=kind):
        imageio.decode(path, tmp_path, LIMITS)


def test_text_starting_like_a_bmp_is_not_called_one(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("BMW 320d service history, 2019 to 2024\n")
    with pytest.raises(InvalidImageError):
        imageio.probe(path, LIMITS)
    bmp = tmp_path / "image.bmp"
    bmp.write_bytes(b"BM" + bytes(12) + (40).to_bytes(4, "little") + bytes(40))
    with pytest.raises(UnsupportedImageTypeError, match="BMP"):
        imageio.probe(bmp, LIMITS)


def test_declared_type_must_match_the_bytes(tmp_path):
    path = write(tmp_path / "a.png", ASTRONAUT)
    with pytest.raises(InvalidImageError, match=r"image/jpeg.*image/png"):
        imageio.probe(path, LIMITS, declared_type="image/jpeg")
    assert imageio.probe(path, LIMITS, declared_type="IMAGE/PNG").mime_type == "image/png"
    jpeg = write(tmp_path / "a.jpg", ASTRONAUT)
    assert imageio.probe(jpeg, LIMITS, declared_type="image/jpg").mime_type == "image/jpeg"


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp"])
def test_truncated_image_is_invalid(tmp_path, suffix):
    whole = write(tmp_path / f"whole{suffix}", data.coffee()[:200, :200]).read_bytes()
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(InvalidImageError, match="truncated or corrupt"):
        imageio.decode(path, tmp_path, LIMITS)
    assert not list(tmp_path.glob("*.u16")), "a failed decode leaves no plane behind"


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp"])
def test_a_name_that_is_not_utf8_is_read_like_any_other(tmp_path, suffix):
    """pyvips gives libvips a file's name in UTF-8, and a Latin-1 name
    (``caf\\xe9``: a ``str`` with a lone surrogate here) raised
    UnicodeEncodeError out of the engine: an image of the same bytes under
    another name must decode to the same pixels, and a cut one be as
    invalid, each error still in libvips's words."""
    whole = write(tmp_path / f"plain{suffix}", COFFEE)
    odd = tmp_path / os.fsdecode(b"caf\xe9" + suffix.encode())
    try:
        odd.write_bytes(whole.read_bytes())
    except OSError:
        pytest.skip("this file system takes only UTF-8 names")
    assert imageio.probe(odd, LIMITS) == imageio.probe(whole, LIMITS)
    ours = imageio.decode(odd, tmp_path, LIMITS)
    theirs = imageio.decode(whole, tmp_path, LIMITS)
    assert ours.source == theirs.source and ours.resolution == theirs.resolution
    assert np.array_equal(ours.color.read_all(), theirs.color.read_all())

    odd.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(InvalidImageError, match="truncated or corrupt"):
        imageio.decode(odd, tmp_path, LIMITS)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(odd.read_bytes())
    with pytest.raises(InvalidImageError, match="truncated or corrupt"):
        imageio.decode(cut, tmp_path, LIMITS)


def test_truncated_header_is_invalid(tmp_path):
    whole = write(tmp_path / "whole.png", ASTRONAUT).read_bytes()
    path = tmp_path / "cut.png"
    path.write_bytes(whole[:20])
    with pytest.raises(InvalidImageError):
        imageio.probe(path, LIMITS)


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp"])
def test_no_mangled_file_leaks_a_libvips_error(tmp_path, suffix):
    whole = write(tmp_path / f"whole{suffix}", COFFEE).read_bytes()
    rng = np.random.default_rng(7)
    for cut in np.linspace(1, len(whole) - 1, 8).astype(int):
        for mangled in (whole[:cut], _flip_bytes(whole, cut, rng)):
            path = tmp_path / f"mangled{suffix}"
            path.write_bytes(mangled)
            try:
                imageio.decode(path, tmp_path, LIMITS)
            except EngineError as err:
                assert err.client_error
            # Anything else (pyvips.Error included) fails the test.


def _flip_bytes(whole: bytes, at: int, rng: np.random.Generator) -> bytes:
    mangled = bytearray(whole)
    for offset in range(at, min(at + 16, len(whole))):
        mangled[offset] = int(rng.integers(256))
    return bytes(mangled)


def test_decompression_bomb_is_refused_from_the_header(tmp_path):
    path = write(tmp_path / "bomb.png", np.zeros((16, 16, 3), np.uint8))
    _patch_png_size(path, 30000, 30000)
    with pytest.raises(ImageTooLargeError, match=r"30000x30000 = 900,000,000 pixels"):
        imageio.probe(path, LIMITS)
    with pytest.raises(ImageTooLargeError):
        imageio.decode(path, tmp_path, LIMITS)


def _patch_png_size(path: Path, width: int, height: int) -> None:
    """Rewrite IHDR's size fields (and its CRC) without touching the pixel data."""
    raw = bytearray(path.read_bytes())
    assert raw[12:16] == b"IHDR"
    raw[16:24] = struct.pack(">II", width, height)
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(raw[12:29])))
    path.write_bytes(bytes(raw))


def test_source_limits_are_enforced(tmp_path):
    path = write(tmp_path / "a.png", ASTRONAUT)
    with pytest.raises(ImageTooLargeError, match="4,096 pixels; the limit is 4,000"):
        imageio.probe(path, ImageLimits(max_source_pixels=4000))
    with pytest.raises(ImageTooLargeError, match="no edge may exceed 63"):
        imageio.probe(path, ImageLimits(max_source_edge=63))


# -- probe ------------------------------------------------------------------


def test_probe_reports_the_header(tmp_path):
    rgba = np.dstack([COFFEE, np.full(COFFEE.shape[:2], 200, np.uint8)])
    source = imageio.probe(write(tmp_path / "a.png", rgba), LIMITS)
    assert source == imageio.SourceImage(72, 48, "image/png", True, False, False, 1)
    grey16 = imageio.probe(write(tmp_path / "g.png", np.zeros((5, 7), np.uint16)), LIMITS)
    assert (grey16.width, grey16.height, grey16.is_grey, grey16.sixteen_bit) == (7, 5, True, True)
    assert not grey16.has_alpha


def test_animated_webp_gives_its_first_frame(tmp_path):
    frames = [np.full((20, 30, 3), value, np.uint8) for value in (10, 100, 200)]
    path = write(tmp_path / "anim.webp", np.concatenate(frames), page_height=20, lossless=True)
    decoded = imageio.decode(path, tmp_path, LIMITS)
    assert decoded.source.pages == 3
    assert (decoded.color.width, decoded.color.height) == (30, 20)
    assert np.all(decoded.color.read_all() == 10 * 257)


# -- decode -> encode round trips -------------------------------------------


def test_rgb_png_round_trip_is_exact(tmp_path):
    source = write(tmp_path / "in.png", COFFEE)
    decoded = imageio.decode(source, tmp_path, LIMITS)
    assert decoded.alpha is None
    assert np.array_equal(decoded.color.read_all(), COFFEE.astype(np.uint16) * 257)
    assert np.array_equal(pixels(round_trip(tmp_path, source)), COFFEE)


def test_rgba_png_keeps_alpha_exactly(tmp_path):
    """Alpha and every visible pixel's colour come back exactly; the colour
    under alpha 0 is the one thing decode replaces (with the visible colour
    around it, so a network does not bleed it into the edge), and nothing
    shows it."""
    alpha = np.tile(np.arange(72, dtype=np.uint8) * 3, (48, 1))
    rgba = np.dstack([COFFEE, alpha])
    out = pixels(round_trip(tmp_path, write(tmp_path / "in.png", rgba)))
    assert np.array_equal(out[:, :, 3], alpha)
    visible = alpha > 0
    assert np.array_equal(out[visible], rgba[visible])
    assert not np.array_equal(out[~visible], rgba[~visible])


def test_rgba_png_without_fully_transparent_pixels_round_trips_exactly(tmp_path):
    alpha = np.tile(np.arange(1, 73, dtype=np.uint8) * 3, (48, 1))
    rgba = np.dstack([COFFEE, alpha])
    out = round_trip(tmp_path, write(tmp_path / "in.png", rgba))
    assert np.array_equal(pixels(out), rgba)


@pytest.mark.parametrize(("suffix", "fmt"), [(".png", "png"), (".jpg", "jpg")])
def test_grey_source_gives_grey_output(tmp_path, suffix, fmt):
    grey = data.camera()[200:260, 200:280]
    decoded = imageio.decode(write(tmp_path / f"in{suffix}", grey), tmp_path, LIMITS)
    assert decoded.source.is_grey and decoded.color.bands == 3
    out = tmp_path / f"out.{fmt}"
    imageio.encode(decoded.color, None, decoded, out, fmt, 95, SETTINGS)
    assert load(out).bands == 1
    if fmt == "png":
        assert np.array_equal(pixels(out)[:, :, 0], grey)


def test_grey_with_alpha_stays_grey_with_alpha(tmp_path):
    grey_alpha = np.dstack([data.camera()[:30, :40], np.full((30, 40), 99, np.uint8)])
    out = round_trip(tmp_path, write(tmp_path / "in.png", grey_alpha))
    assert np.array_equal(pixels(out), grey_alpha)


def test_sixteen_bit_png_round_trip_keeps_every_value(tmp_path):
    rng = np.random.default_rng(1)
    deep = rng.integers(0, 65536, (24, 32, 3), dtype=np.uint16)
    source = write(tmp_path / "in.png", deep)
    decoded = imageio.decode(source, tmp_path, LIMITS)
    assert decoded.source.sixteen_bit
    assert np.array_equal(decoded.color.read_all(), deep)
    out = round_trip(tmp_path, source)
    assert load(out).format == "ushort"
    assert np.array_equal(pixels(out), deep)
    webp = round_trip(tmp_path, source, "webp", quality=100)
    assert load(webp).format == "uchar"


def test_sixteen_bit_grey_gives_sixteen_bit_grey(tmp_path):
    ramp = (np.arange(40 * 30, dtype=np.uint16) * 50).reshape(30, 40)
    out = round_trip(tmp_path, write(tmp_path / "in.png", ramp))
    assert (load(out).bands, load(out).format) == (1, "ushort")
    assert np.array_equal(pixels(out)[:, :, 0], ramp)


# What a viewer shows for each EXIF orientation of the stored pixels.
UPRIGHT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_and_reset(tmp_path, orientation):
    # No alpha of 0, whose colour decode would replace: the round trip is exact.
    rgba = np.dstack([COFFEE, np.tile(np.arange(1, 73, dtype=np.uint8), (48, 1))])
    source = write(tmp_path / "in.png", rgba, orientation=orientation)
    expected = UPRIGHT[orientation](rgba)
    assert imageio.probe(source, LIMITS).width == expected.shape[1]
    decoded = imageio.decode(source, tmp_path, LIMITS)
    assert decoded.exif is not None
    out = round_trip(tmp_path, source)
    assert np.array_equal(pixels(out), expected)
    assert load(out).get("orientation") == 1


def test_exif_orientation_6_jpeg(tmp_path):
    source = write(tmp_path / "in.jpg", COFFEE, orientation=6, Q=98)
    out = round_trip(tmp_path, source, "jpg", quality=98)
    got = pixels(out).astype(int)
    assert got.shape == (72, 48, 3)
    right = np.abs(got - np.rot90(COFFEE, -1)).mean()
    wrong = np.abs(got - np.rot90(COFFEE, 1)).mean()
    assert right < 3 < wrong
    assert load(out).get("orientation") == 1


@pytest.mark.parametrize("fmt", ["png", "jpg", "webp"])
def test_icc_profile_is_kept(tmp_path, fmt):
    p3 = vips_image(COFFEE).icc_transform("p3", input_profile="srgb")
    profile = p3.get("icc-profile-data")
    source = tmp_path / "in.jpg"
    p3.jpegsave(str(source))
    decoded = imageio.decode(source, tmp_path, LIMITS)
    assert decoded.icc_profile == profile
    out = round_trip(tmp_path, source, fmt)
    assert load(out).get("icc-profile-data") == profile


def test_a_profile_too_large_to_carry_is_applied_instead(tmp_path):
    """A 2 MB profile (printer profiles run to several) made results that
    Pillow refuses to open: the colours are converted to sRGB instead, and
    the result carries no profile."""
    p3 = vips_image(COFFEE[:48, :64]).icc_transform("p3", input_profile="srgb")
    profile = bytearray(bytes(p3.get("icc-profile-data")).ljust(2_000_000, b"\0"))
    profile[:4] = len(profile).to_bytes(4, "big")
    p3.set_type(pyvips.GValue.blob_type, "icc-profile-data", bytes(profile))
    source = tmp_path / "in.png"
    p3.pngsave(str(source))
    assert len(load(source).get("icc-profile-data")) == 2_000_000
    out = round_trip(tmp_path, source, "png")
    assert not load(out).get_typeof("icc-profile-data")
    expected = load(source).icc_transform("srgb", embedded=True).numpy().astype(int)
    assert np.abs(pixels(out).astype(int) - expected).max() <= 1
    assert np.abs(expected - pixels(source)).max() > 10  # P3 and sRGB differ here
    image_module = pytest.importorskip("PIL.Image")
    with image_module.open(out) as opened:
        opened.load()


def test_cmyk_jpeg_becomes_srgb(tmp_path):
    source = tmp_path / "cmyk.jpg"
    vips_image(COFFEE).icc_transform("cmyk", input_profile="srgb").jpegsave(str(source), Q=98)
    decoded = imageio.decode(source, tmp_path, LIMITS)
    assert decoded.color.bands == 3 and decoded.icc_profile is None
    out = round_trip(tmp_path, source)
    assert load(out).bands == 3
    # CMYK's gamut is smaller than sRGB's: close, not equal.
    assert np.abs(pixels(out).astype(int) - COFFEE).mean() < 12


def test_jpeg_flattens_alpha_on_the_background(tmp_path):
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[:, :, 0] = 255
    rgba[:, 16:, 3] = 255  # left half transparent, right half opaque red
    source = write(tmp_path / "in.png", rgba)
    for background in [(255, 255, 255), (0, 0, 255)]:
        settings = EncodeSettings(jpeg_background=background)
        got = pixels(round_trip(tmp_path, source, "jpg", quality=100, settings=settings))
        assert got.shape == (32, 32, 3)
        assert np.abs(got[:, :12].astype(int) - background).max() <= 3
        assert np.abs(got[:, 20:].astype(int) - (255, 0, 0)).max() <= 3


def test_webp_keeps_alpha(tmp_path):
    rgba = np.dstack([COFFEE, np.full(COFFEE.shape[:2], 128, np.uint8)])
    out = round_trip(tmp_path, write(tmp_path / "in.png", rgba), "webp", quality=90)
    assert load(out).bands == 4


def test_quality_is_validated_and_used(tmp_path):
    source = write(tmp_path / "in.png", data.coffee()[:128, :128])
    decoded = imageio.decode(source, tmp_path, LIMITS)
    for bad in (0, 101):
        with pytest.raises(InvalidOptionError, match="between 1 and 100"):
            imageio.encode(decoded.color, None, decoded, tmp_path / "x.jpg", "jpg", bad, SETTINGS)
    assert not (tmp_path / "x.jpg").exists()
    sizes = [
        imageio.encode(decoded.color, None, decoded, tmp_path / "x.jpg", "jpg", q, SETTINGS)
        for q in (10, 95)
    ]
    assert sizes[0] < sizes[1]


def encode_with(tmp_path: Path, fmt: str, name: str, **settings: object) -> Path:
    """An upscale-like photo encoded with ``EncodeSettings(**settings)``."""
    source = tmp_path / "in.png"
    if not source.exists():
        write(source, data.coffee()[:128, :128])
    decoded = imageio.decode(source, tmp_path, LIMITS)
    out = tmp_path / f"{name}.{fmt}"
    imageio.encode(decoded.color, None, decoded, out, fmt, None, EncodeSettings(**settings))
    return out


def test_webp_effort_reaches_libwebp(tmp_path):
    fast = encode_with(tmp_path, "webp", "fast", webp_effort=0)
    thorough = encode_with(tmp_path, "webp", "thorough", webp_effort=6)
    # Same quality, more search: a different (smaller) file of the same picture.
    assert thorough.stat().st_size < fast.stat().st_size
    for out in (fast, thorough):
        assert (load(out).width, load(out).height, load(out).bands) == (128, 128, 3)


def test_jpeg_optimize_coding_is_lossless_and_not_larger(tmp_path):
    plain = encode_with(tmp_path, "jpg", "plain", jpeg_optimize_coding=False)
    optimized = encode_with(tmp_path, "jpg", "optimized", jpeg_optimize_coding=True)
    # Only the Huffman tables change: fewer bytes, the very same pixels.
    assert optimized.stat().st_size < plain.stat().st_size
    assert np.array_equal(pixels(optimized), pixels(plain))


def test_jpeg_subsampling_follows_the_setting(tmp_path):
    def chroma(subsample: str) -> tuple[str, int]:
        out = encode_with(tmp_path, "jpg", subsample, jpeg_subsample=subsample)
        return load(out).get("jpeg-chroma-subsample"), out.stat().st_size

    # auto: full colour resolution at the default quality (92 >= 90).
    assert chroma("auto")[0] == chroma("off")[0] == "4:4:4"
    assert chroma("on")[0] == "4:2:0"
    assert chroma("on")[1] < chroma("off")[1]


def test_failed_write_leaves_nothing_at_the_destination(tmp_path):
    destination = tmp_path / "result.png"
    destination.write_bytes(b"previous result")

    def half_then_crash(path: str) -> None:
        Path(path).write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        planeio.save_atomically(half_then_crash, destination)
    assert destination.read_bytes() == b"previous result"
    assert [p.name for p in tmp_path.iterdir()] == ["result.png"]


def test_a_destination_of_the_longest_legal_name_is_written(tmp_path):
    """The temporary name beside it carried the whole name, and went past
    the file system's 255 bytes."""
    destination = tmp_path / ("x" * 251 + ".png")
    assert planeio.save_atomically(lambda path: Path(path).write_bytes(b"png"), destination) == 3
    assert [p.name for p in tmp_path.iterdir()] == [destination.name]


def test_libvips_write_failures_are_os_errors(tmp_path):
    """A full disk met by libvips (writing into /dev/full, whose ENOSPC is
    the kernel's) is an OSError with that number, from the encoder's writes
    and from planes alike; the previous result stays as it was."""
    image = pyvips.Image.black(16, 8, bands=3).cast("ushort")
    destination = tmp_path / "result.png"
    destination.write_bytes(b"previous result")

    with pytest.raises(OSError) as encoded:
        planeio.save_atomically(lambda _path: image.pngsave("/dev/full"), destination)
    assert encoded.value.errno == errno.ENOSPC
    assert encoded.value.strerror == "could not write result.png: No space left on device"
    assert isinstance(encoded.value.__cause__, pyvips.Error)
    assert destination.read_bytes() == b"previous result"
    assert [p.name for p in tmp_path.iterdir()] == ["result.png"]

    with pytest.raises(OSError) as plane:
        planeio.save_plane(image, Path("/dev/full"))
    assert plane.value.errno == errno.ENOSPC

    # Any other libvips failure of ours is an I/O error, in one line.
    with pytest.raises(OSError) as missing:
        planeio.save_plane(image, tmp_path / "no such folder" / "plane.u16")
    assert missing.value.errno == errno.EIO
    assert "\n" not in missing.value.strerror


def test_deleted_planes_are_not_kept_open(tmp_path):
    source = write(tmp_path / "in.png", np.dstack([COFFEE, COFFEE[:, :, :1]]))
    decoded = imageio.decode(source, tmp_path, LIMITS)
    imageio.encode(decoded.color, decoded.alpha, decoded, tmp_path / "o.png", "png", None, SETTINGS)
    for plane in tmp_path.glob("*.u16"):
        plane.unlink()
    fds = Path("/proc/self/fd")
    if fds.exists():
        targets = [os.readlink(fd) for fd in fds.iterdir() if fd.is_symlink()]
        assert not [t for t in targets if t.startswith(str(tmp_path))]


# -- output limits, resize, thumbnails --------------------------------------


def test_check_output_size():
    with pytest.raises(InvalidOptionError):
        imageio.check_output_size(10, 10, "gif", LIMITS)
    imageio.check_output_size(16383, 6000, "webp", LIMITS)
    with pytest.raises(ImageTooLargeError, match=r"WebP limit.*png or jpg"):
        imageio.check_output_size(16383, 16383, "webp", LIMITS)
    roomy = ImageLimits(max_webp_output_pixels=300_000_000)
    imageio.check_output_size(16383, 16383, "webp", roomy)
    imageio.check_output_size(65500, 100, "jpg", LIMITS)
    with pytest.raises(ImageTooLargeError, match="JPEG"):
        imageio.check_output_size(65501, 100, "jpg", LIMITS)
    imageio.check_output_size(100_000, 100, "png", LIMITS)
    with pytest.raises(ImageTooLargeError, match=r"WebP.*16384x100.*smaller scale, or PNG"):
        imageio.check_output_size(16384, 100, "webp", LIMITS)
    with pytest.raises(ImageTooLargeError, match="JPEG"):
        imageio.check_output_size(100, 65536, "jpg", LIMITS)
    with pytest.raises(ImageTooLargeError, match="smaller scale"):
        imageio.check_output_size(1000, 1000, "png", ImageLimits(max_output_pixels=999_999))


def test_the_jpeg_edge_limit_is_the_encoders(tmp_path):
    """libjpeg writes up to 65500 pixels an edge (not the 65535 its size
    fields hold): the limit checked before any work is the one it keeps."""
    edge = MAX_OUTPUT_EDGE["jpg"]
    color = Plane.from_array(tmp_path / "c.u16", np.full((2, edge, 3), 30000, np.uint16))
    source = write(tmp_path / "in.png", np.full((2, 2, 3), 120, np.uint8))
    decoded = imageio.decode(source, tmp_path, LIMITS)
    imageio.encode(color, None, decoded, tmp_path / "wide.jpg", "jpg", None, SETTINGS)
    assert pyvips.Image.new_from_file(str(tmp_path / "wide.jpg")).width == edge
    wider = Plane.from_array(tmp_path / "w.u16", np.full((2, edge + 1, 3), 30000, np.uint16))
    with pytest.raises(ImageTooLargeError):
        imageio.encode(wider, None, decoded, tmp_path / "wider.jpg", "jpg", None, SETTINGS)


@pytest.mark.parametrize(
    ("source", "target"), [((40, 24), (20, 12)), ((90, 45), (80, 40)), ((37, 11), (111, 33))]
)
@pytest.mark.parametrize("bands", [1, 3])
def test_resize_gives_exact_dimensions(tmp_path, source, target, bands):
    flat = np.full((source[1], source[0], bands), 40000, np.uint16)
    plane = Plane.from_array(tmp_path / "in.u16", flat)
    resized = imageio.resize(plane, *target, tmp_path / "out.u16")
    assert (resized.width, resized.height, resized.bands) == (*target, bands)
    assert resized.path.stat().st_size == resized.nbytes
    assert np.all(resized.read_all() == 40000)


def test_resize_keeps_the_picture(tmp_path):
    big = np.kron(COFFEE, np.ones((4, 4, 1), np.uint8)).astype(np.uint16) * 257
    plane = Plane.from_array(tmp_path / "in.u16", big)
    half = imageio.resize(plane, 144, 96, tmp_path / "out.u16").read_all().astype(int)
    small = np.kron(COFFEE, np.ones((2, 2, 1), np.uint8)).astype(int) * 257
    assert np.abs(half - small).mean() < 0.02 * 65535


@pytest.mark.parametrize(("size", "expected"), [((600, 300), (256, 128)), ((100, 50), (100, 50))])
def test_thumbnail_long_edge(tmp_path, size, expected):
    source = tmp_path / "result.png"
    vips_image(data.astronaut()).resize(size[0] / 512, vscale=size[1] / 512).pngsave(str(source))
    thumb = tmp_path / "thumb.webp"
    assert imageio.make_thumbnail(source, thumb) == expected
    assert imageio.sniff_mime_type(thumb.read_bytes()[:32]) == "image/webp"
    assert (load(thumb).width, load(thumb).height) == expected


def test_a_failed_write_is_a_server_error_not_a_bad_image(tmp_path):
    """Our work directory failing (here: gone) must not be blamed on the image."""
    source = tmp_path / "ok.png"
    pyvips.Image.black(8, 8).pngsave(str(source))
    with pytest.raises(OSError) as caught:
        imageio.decode(source, tmp_path / "no-such-folder", LIMITS)
    assert not isinstance(caught.value, EngineError)


#: Decodes a file in a process where libvips can write no temporary file:
#: TMPDIR names no folder, and any image over 1 KB of pixels would go there.
_DECODE_WITHOUT_TMPDIR = """
import sys
from pathlib import Path
from upscayl_cloud.engine import imageio
from upscayl_cloud.engine.options import ImageLimits
decoded = imageio.decode(Path(sys.argv[1]), Path(sys.argv[2]), ImageLimits())
print(decoded.color.width, decoded.color.height, decoded.alpha is not None)
"""


@pytest.mark.parametrize("suffix", [".webp", ".png", ".jpg"])
def test_decoding_writes_nothing_outside_the_work_folder(tmp_path, suffix):
    """libvips's WebP loader cannot stream: above its disc threshold (100 MB
    of pixels) it copied the frame into TMPDIR, a disk the work-space check
    never sees, and a full one there failed the client's file as corrupt."""
    import subprocess
    import sys

    source = tmp_path / f"in{suffix}"
    vips_image(COFFEE).write_to_file(str(source))
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp_path / "no-such-folder"), "VIPS_DISC_THRESHOLD": "1k"}
    done = subprocess.run(
        [sys.executable, "-c", _DECODE_WITHOUT_TMPDIR, str(source), str(work)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    width, height, _alpha = done.stdout.split()
    assert (int(width), int(height)) == (COFFEE.shape[1], COFFEE.shape[0])


# -- what real clients send ---------------------------------------------------


@pytest.mark.parametrize(("suffix", "fmt"), [(".png", "png"), (".jpg", "jpg"), (".jpg", "webp")])
def test_resolution_is_kept_and_turned_with_the_pixels(tmp_path, suffix, fmt):
    # 300 DPI across, 150 DPI down, stored rotated (orientation 6): upright,
    # the axes swap. Before, every output said 25.4 DPI (a plane has none).
    image = vips_image(COFFEE, orientation=6).copy(xres=300 / 25.4, yres=150 / 25.4)
    source = tmp_path / f"in{suffix}"
    image.write_to_file(str(source))
    out = load(round_trip(tmp_path, source, fmt))
    exif = [out.get(f"exif-ifd0-{axis}Resolution").split()[0] for axis in "XY"]
    assert [float(Fraction(value)) for value in exif] == pytest.approx([150, 300], abs=0.1)
    if fmt == "png":  # pHYs; JFIF holds one density (libvips's X), WebP none
        assert (out.xres * 25.4, out.yres * 25.4) == pytest.approx((150, 300), abs=0.1)


def test_a_source_without_resolution_gets_72_dpi(tmp_path):
    # libvips would write an EXIF block stating 25.4 DPI: keep none.
    source = write(tmp_path / "in.webp", COFFEE, lossless=True, keep=pyvips.enums.ForeignKeep.NONE)
    out = load(round_trip(tmp_path, source))
    assert (out.xres * 25.4, out.yres * 25.4) == pytest.approx((72, 72), abs=0.1)


@pytest.mark.parametrize(
    ("tags", "dpi"),
    [
        ({0x010F: "Camera"}, 72),  # EXIF without resolution: libvips's field said 25.4
        ({0x011A: 300, 0x011B: 150}, (300, 150)),  # inches, unless stated
        ({0x011A: 300, 0x011B: 300, 0x0128: 2}, 300),
        ({0x011A: 100, 0x011B: 100, 0x0128: 3}, 254),  # per centimetre
        ({0x011A: 300, 0x011B: 300, 0x0128: 1}, 72),  # no unit: an aspect ratio
        ({0x011A: 300}, 72),  # half a resolution is none
    ],
)
def test_a_webp_resolution_is_its_exifs(tmp_path, tags, dpi):
    """libvips's WebP loader reads no resolution from EXIF, and lists an
    XResolution field even where the EXIF has none."""
    image_module = pytest.importorskip("PIL.Image")
    exif = image_module.Exif()
    for tag, value in tags.items():
        exif[tag] = value
    source = tmp_path / "in.webp"
    image_module.new("RGB", (16, 12), (90, 140, 200)).save(
        source, exif=exif.tobytes(), lossless=True
    )
    decoded = imageio.decode(source, tmp_path, LIMITS)
    expected = (dpi, dpi) if isinstance(dpi, int) else dpi
    assert tuple(r * 25.4 for r in decoded.resolution) == pytest.approx(expected, abs=1e-6)


def test_a_png_without_phys_gets_exactly_72_dpi(tmp_path):
    """Not libvips's own default, 2834 pixels a metre (71.98 DPI)."""
    plain = tmp_path / "plain.png"
    vips_image(COFFEE[:16, :16]).pngsave(str(plain), keep=pyvips.enums.ForeignKeep.NONE)
    raw = plain.read_bytes()
    at = raw.index(b"pHYs") - 4  # the chunk's length field
    source = tmp_path / "in.png"
    source.write_bytes(raw[:at] + raw[at + 4 + 4 + 9 + 4 :])
    assert b"pHYs" not in source.read_bytes()
    decoded = imageio.decode(source, tmp_path, LIMITS)
    assert tuple(r * 25.4 for r in decoded.resolution) == pytest.approx((72, 72), abs=1e-6)


@pytest.mark.parametrize(
    ("x", "y", "unit"),
    [
        (3000, 3000, 0),  # an aspect ratio, no unit: libvips read it as 76,200 DPI
        (0xFFFFFFFF, 0xFFFFFFFF, 1),  # beyond what libvips writes back (GLib CRITICAL)
    ],
)
def test_a_png_density_that_is_no_resolution_gets_72_dpi(tmp_path, x, y, unit):
    plain = tmp_path / "plain.png"
    vips_image(COFFEE[:32, :32]).pngsave(str(plain), keep=pyvips.enums.ForeignKeep.NONE)
    raw = plain.read_bytes()
    at = raw.index(b"pHYs")  # libvips always writes one; its body is rewritten
    phys = struct.pack(">IIB", x, y, unit)
    crc = struct.pack(">I", zlib.crc32(b"pHYs" + phys) & 0xFFFFFFFF)
    source = tmp_path / "in.png"
    source.write_bytes(raw[: at + 4] + phys + crc + raw[at + 4 + 9 + 4 :])
    out = load(round_trip(tmp_path, source, "png"))
    assert (out.xres * 25.4, out.yres * 25.4) == pytest.approx((72, 72), abs=0.1)


def _adobe_cmyk_jpeg(path: Path, inks: np.ndarray, ycck: bool) -> Path:
    """A Photoshop-style CMYK JPEG (Adobe marker, inverted samples, no
    profile), written by Pillow; ``ycck`` stores the same inks as YCCK (the
    C, M, Y planes as YCbCr, as Photoshop does), which libjpeg undoes."""
    image_module = pytest.importorskip("PIL.Image")
    stored = inks.astype(float)
    if ycck:
        c, m, y = stored[..., 0], stored[..., 1], stored[..., 2]
        stored = np.dstack(
            [
                0.299 * c + 0.587 * m + 0.114 * y,
                128 - 0.168736 * c - 0.331264 * m + 0.5 * y,
                128 + 0.5 * c - 0.418688 * m - 0.081312 * y,
                255 - stored[..., 3],
            ]
        )
        stored = 255 - stored  # Pillow inverts CMYK when it saves
    samples = np.clip(np.round(stored), 0, 255).astype(np.uint8)
    image_module.fromarray(samples, "CMYK").save(path, quality=100, subsampling=0)
    if ycck:
        raw = bytearray(path.read_bytes())
        at = raw.index(b"Adobe")
        assert raw[at + 11] == 0  # transform: 0 = CMYK, 2 = YCCK
        raw[at + 11] = 2
        path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize("ycck", [False, True])
def test_adobe_cmyk_and_ycck_jpegs_give_their_colours_not_inverted(tmp_path, ycck):
    inks = np.zeros((16, 24, 4), np.uint8)
    inks[:, :12] = (0, 230, 230, 0)  # red on the left
    inks[:, 12:] = (230, 230, 0, 0)  # blue on the right
    source = _adobe_cmyk_jpeg(tmp_path / "in.jpg", inks, ycck)
    assert load(source).interpretation == "cmyk"
    got = pixels(round_trip(tmp_path, source)).astype(int)
    assert got.shape == (16, 24, 3)
    red, blue = got[8, 4], got[8, 20]
    assert red[0] > 150 > 100 > max(red[1], red[2])
    assert blue[2] > 80 > max(blue[0], blue[1]) - 20
    if ycck:
        plain = pixels(round_trip(tmp_path, _adobe_cmyk_jpeg(tmp_path / "p.jpg", inks, False)))
        assert np.abs(got - plain.astype(int)).max() <= 3


def test_palette_and_grey_pngs_with_trns_give_alpha(tmp_path):
    rgba = np.zeros((16, 24, 4), np.uint8)
    rgba[:, 12:] = (255, 0, 0, 255)
    palette = tmp_path / "palette.png"
    vips_image(rgba).pngsave(str(palette), palette=True)
    grey = tmp_path / "grey.png"
    # A grey PNG whose tRNS makes value 0 transparent, written by hand.
    rows = b"".join(b"\x00" + bytes([0] * 12 + [200] * 12) for _ in range(16))
    chunks = [
        (b"IHDR", struct.pack(">IIBBBBB", 24, 16, 8, 0, 0, 0, 0)),
        (b"tRNS", struct.pack(">H", 0)),
        (b"IDAT", zlib.compress(rows)),
        (b"IEND", b""),
    ]
    grey.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + b"".join(
            struct.pack(">I", len(data_))
            + kind
            + data_
            + struct.pack(">I", zlib.crc32(kind + data_))
            for kind, data_ in chunks
        )
    )
    for source, opaque in [(palette, (255, 0, 0)), (grey, (200,))]:
        assert imageio.probe(source, LIMITS).has_alpha
        got = pixels(round_trip(tmp_path, source))
        assert got.shape == (16, 24, len(opaque) + 1)
        assert (got[:, :12, -1] == 0).all() and (got[:, 12:, -1] == 255).all()
        assert (got[:, 12:, :-1] == opaque).all()


@pytest.mark.parametrize(
    ("suffix", "options"),
    [
        (".png", {"interlace": True}),
        (".jpg", {"interlace": True}),
        (".jpg", {"restart_interval": 1}),
    ],
)
def test_interlaced_progressive_and_restart_files_decode_like_plain_ones(tmp_path, suffix, options):
    plain = imageio.decode(write(tmp_path / f"plain{suffix}", COFFEE, Q=95), tmp_path, LIMITS)
    special = tmp_path / f"special{suffix}"
    write(special, COFFEE, **({"Q": 95} if suffix == ".jpg" else {}), **options)
    decoded = imageio.decode(special, tmp_path, LIMITS)
    assert np.abs(
        decoded.color.read_all().astype(int) - plain.color.read_all().astype(int)
    ).max() <= (0 if suffix == ".png" else 2 * 257)


def test_apng_gives_the_image_still_viewers_show(tmp_path):
    image_module = pytest.importorskip("PIL.Image")
    frames = [image_module.fromarray(np.full((8, 12, 3), v, np.uint8)) for v in (10, 100, 200)]
    # default_image=True: the IDAT (what a viewer that does not animate
    # shows) is frames[0], which is not part of the animation; the
    # animation's first frame is frames[1].
    source = tmp_path / "anim.png"
    frames[0].save(source, save_all=True, append_images=frames[1:], default_image=True)
    decoded = imageio.decode(source, tmp_path, LIMITS)
    assert (decoded.color.width, decoded.color.height) == (12, 8)
    assert np.all(decoded.color.read_all() == 10 * 257)


# -- hostile files ------------------------------------------------------------


def _segment(marker: int, body: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body


def _progressive_jpeg(scans: int) -> bytes:
    """A 16x16 grey progressive JPEG: its DC scan, then ``scans - 1`` copies
    of one AC scan that only says "end of block" (4 bits, one per block).
    libjpeg goes over every block once per scan, so a large frame with
    thousands of such scans costs minutes to decode from a tiny file."""
    frame = b"\x08" + struct.pack(">HH", 16, 16) + b"\x01\x01\x11\x00"
    one_code = b"\x01" + b"\x00" * 15  # one Huffman code of 1 bit...
    header = (
        b"\xff\xd8"
        + _segment(0xDB, b"\x00" + b"\x01" * 64)
        + _segment(0xC2, frame)
        + _segment(0xC4, b"\x00" + one_code + b"\x00")  # ...DC: difference 0
        + _segment(0xC4, b"\x10" + one_code + b"\x00")  # ...AC: end of block
    )
    dc = _segment(0xDA, b"\x01\x01\x00\x00\x00\x00") + b"\x0f"
    ac = _segment(0xDA, b"\x01\x01\x00\x01\x3f\x00") + b"\x0f"
    return header + dc + ac * (scans - 1) + b"\xff\xd9"


def test_a_jpeg_of_too_many_scans_is_refused_before_decoding(tmp_path):
    allowed = tmp_path / "allowed.jpg"
    allowed.write_bytes(_progressive_jpeg(500))
    assert imageio.decode(allowed, tmp_path, LIMITS).color.width == 16
    hostile = tmp_path / "hostile.jpg"
    hostile.write_bytes(_progressive_jpeg(501))
    with pytest.raises(InvalidImageError, match="more than 500 scans"):
        imageio.decode(hostile, tmp_path, LIMITS)
    assert imageio.probe(hostile, LIMITS).width == 16, "the header alone is still read"


def test_scans_behind_extraneous_bytes_are_still_counted(tmp_path):
    """libjpeg skips a junk "FF 00" between segments (with a warning) and
    decodes the scans after it; the count must not stop there."""
    whole = _progressive_jpeg(600)
    first_ac = whole.index(b"\xff\xda", whole.index(b"\xff\xda") + 2)
    end = whole.rindex(b"\xff\xd9")
    # Read as a marker 00 with a length, "FF 00" would jump over every AC scan.
    junk = b"\xff\x00" + struct.pack(">H", end - first_ac + 2)
    hostile = tmp_path / "hidden.jpg"
    hostile.write_bytes(whole[:first_ac] + _segment(0xFE, b"note") + junk + whole[first_ac:])
    with pytest.raises(InvalidImageError, match="more than 500 scans"):
        imageio.decode(hostile, tmp_path, LIMITS)


@pytest.mark.timeout(60)
def test_a_long_run_of_ff_bytes_is_walked_in_linear_time(tmp_path):
    """4 MB of 0xFF after a scan: the marker search was quadratic on such a
    run (16 KB took 2.8 s, 4 MB would take days), all inside one regex call
    that holds the GIL, so the worker's heartbeat stopped too."""
    whole = _progressive_jpeg(2)
    end = whole.rindex(b"\xff\xd9")
    path = tmp_path / "fill.jpg"
    path.write_bytes(whole[:end] + b"\xff" * (4 << 20) + b"\x00" + whole[end:])
    with contextlib.suppress(InvalidImageError):  # refused or decoded: it returns
        imageio.decode(path, tmp_path, LIMITS)


def test_jpeg_scan_count_skips_metadata_and_restart_markers(tmp_path):
    # 0xFFDA inside an APP segment's body and restart markers in the data are
    # not scans; a tail after the end-of-image marker is not read.
    plain = write(tmp_path / "r.jpg", COFFEE, restart_interval=1).read_bytes()
    app = b"\xff\xe1" + struct.pack(">H", 2 + 600 * 2) + b"\xff\xda" * 600
    tail = b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00" * 600
    path = tmp_path / "busy.jpg"
    path.write_bytes(plain[:2] + app + plain[2:] + tail)
    assert imageio.decode(path, tmp_path, LIMITS).color.width == 72
