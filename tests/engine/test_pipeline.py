"""Whole pipelines, every model: decode -> passes -> resize -> encode."""

import contextlib
import os
import threading
import time

import numpy as np
import pytest
import pyvips

from tests.engine.reference import plain_ncnn
from upscayl_cloud.engine.catalog import MODELS, Run, get_model
from upscayl_cloud.engine.errors import (
    CancelledError,
    ImageTooLargeError,
    InvalidImageError,
    InvalidOptionError,
    UnknownModelError,
)
from upscayl_cloud.engine.options import EngineSettings, UpscaleRequest
from upscayl_cloud.engine.pipeline import upscale_file, work_space_bytes

HEAVY = {"upscayl-standard-4x", "digital-art-4x", "texture-boost-4x"}
SETTINGS = EngineSettings(threads=2, use_gpu=False, backend="ncnn")


def _write(path, pixels: np.ndarray, **save_options):
    image = pyvips.Image.new_from_array(pixels)
    if pixels.dtype == np.uint16:
        image = image.copy(interpretation="rgb16" if pixels.shape[2] >= 3 else "grey16")
    image.write_to_file(str(path), **save_options)
    return path


def _read(path) -> np.ndarray:
    return pyvips.Image.new_from_file(str(path)).numpy()


def _tiny(photo, model: str) -> np.ndarray:
    size = (16, 20) if model in HEAVY else (36, 44)
    return np.round(photo[120 : 120 + size[0], 220 : 220 + size[1]] * 255).astype(np.uint8)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_4x_equals_plain_ncnn_runs_of_the_same_networks(model, photo, tmp_path):
    """The engine's result is the model's networks run by plain ncnn on the same
    pixels, within 1/255: no step of ours (planes, tiles, context, encoding)
    changes what the networks compute."""
    pixels = _tiny(photo, model)
    source = _write(tmp_path / "in.png", pixels)
    result = upscale_file(
        source, tmp_path / "out.png", UpscaleRequest(model, 4, "png"), settings=SETTINGS
    )
    expected = pixels.astype(np.float32) / 255
    for step in get_model(model).plan(4):
        assert isinstance(step, Run)
        expected = plain_ncnn(step.network, expected)
    produced = _read(tmp_path / "out.png")
    assert (result.width, result.height) == (pixels.shape[1] * 4, pixels.shape[0] * 4)
    assert produced.shape == expected.shape
    assert np.abs(produced.astype(int) - np.round(expected * 255)).max() <= 1


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("scale", [2, 8])
def test_output_is_exactly_scale_times_input(model, scale, photo, tmp_path):
    pixels = _tiny(photo, model)[:13, :11] if model in HEAVY else _tiny(photo, model)[:21, :27]
    source = _write(tmp_path / "in.png", pixels)
    request = UpscaleRequest(model, scale, "png")
    result = upscale_file(source, tmp_path / "out.png", request, settings=SETTINGS)
    h, w = pixels.shape[:2]
    assert (result.width, result.height) == (w * scale, h * scale)
    assert _read(tmp_path / "out.png").shape == (h * scale, w * scale, 3)


def test_tiled_pipeline_equals_untiled(photo, tmp_path):
    pixels = np.round(photo[:90, :130] * 255).astype(np.uint8)
    source = _write(tmp_path / "in.png", pixels)
    request = UpscaleRequest("quick-clear-4x", 4, "png")
    upscale_file(source, tmp_path / "whole.png", request, settings=SETTINGS)
    tiled = EngineSettings(threads=2, use_gpu=False, backend="ncnn", tile_size=32)
    upscale_file(source, tmp_path / "tiled.png", request, settings=tiled)
    diff = np.abs(_read(tmp_path / "whole.png").astype(int) - _read(tmp_path / "tiled.png"))
    assert diff.max() <= 2


def test_alpha_is_upscaled_by_the_network(photo, tmp_path):
    rgb = np.round(photo[100:132, 200:240] * 255).astype(np.uint8)
    yy, xx = np.mgrid[0:32, 0:40]
    alpha = np.clip((xx * 7 + yy * 3) % 256, 0, 255).astype(np.uint8)
    source = _write(tmp_path / "in.png", np.dstack([rgb, alpha]))
    upscale_file(
        source, tmp_path / "out.png", UpscaleRequest("quick-clear-4x", 4, "png"), settings=SETTINGS
    )
    out = _read(tmp_path / "out.png")
    assert out.shape == (128, 160, 4)
    grey3 = np.repeat((alpha.astype(np.float32) / 255)[:, :, None], 3, axis=2)
    network = plain_ncnn("realesr-animevideov3-x4", grey3).mean(axis=2) * 255
    # ... within the least and greatest source alpha around each pixel.
    around = np.lib.stride_tricks.sliding_window_view(np.pad(alpha, 1, mode="edge"), (3, 3))
    low, high = (np.kron(f(around, axis=(2, 3)), np.ones((4, 4))) for f in (np.min, np.max))
    expected = np.clip(network, low, high)
    assert np.abs(expected - network).max() > 2
    assert np.abs(out[:, :, 3].astype(int) - np.round(expected)).max() <= 1


def test_colour_hidden_under_full_transparency_does_not_bleed(tmp_path):
    """An opaque grey half beside a transparent half whose hidden colour is
    magenta: the visible pixels come out as with a grey hidden colour (46 of
    255 levels of magenta bled into them when the network read it)."""

    def upscaled(hidden: tuple[int, int, int]) -> np.ndarray:
        pixels = np.zeros((24, 32, 4), np.uint8)
        pixels[:, :16] = (128, 128, 128, 255)
        pixels[:, 16:, :3] = hidden
        source = _write(tmp_path / "in.png", pixels)
        request = UpscaleRequest("quick-clear-4x", 4, "png")
        upscale_file(source, tmp_path / "out.png", request, settings=SETTINGS)
        return _read(tmp_path / "out.png").astype(int)

    magenta, grey = upscaled((255, 0, 255)), upscaled((128, 128, 128))
    visible = magenta[:, :, 3] == 255
    assert visible[:, :60].all() and not visible[:, 68:].any()
    assert np.abs(magenta[:, :, :3] - grey[:, :, :3])[visible].max() <= 1


def test_opaque_alpha_stays_opaque_without_a_network_pass(photo, tmp_path):
    rgb = np.round(photo[100:132, 200:240] * 255).astype(np.uint8)
    source = _write(tmp_path / "in.png", np.dstack([rgb, np.full((32, 40), 255, np.uint8)]))
    calls = []
    upscale_file(
        source,
        tmp_path / "out.png",
        UpscaleRequest("quick-clear-4x", 4, "png"),
        settings=SETTINGS,
        progress=calls.append,
    )
    out = _read(tmp_path / "out.png")
    assert out.shape[2] == 4 and (out[:, :, 3] == 255).all()


def test_grey_and_16_bit_sources_keep_their_kind(photo, tmp_path):
    grey = np.round(photo[100:130, 200:236, 1] * 255).astype(np.uint8)[:, :, None]
    _write(tmp_path / "grey.png", grey)
    upscale_file(
        tmp_path / "grey.png",
        tmp_path / "grey-out.png",
        UpscaleRequest("quick-clear-4x", 2, "png"),
        settings=SETTINGS,
    )
    out = pyvips.Image.new_from_file(str(tmp_path / "grey-out.png"))
    assert (out.bands, out.width, out.height) == (1, 72, 60)

    deep = np.round(photo[100:130, 200:236] * 65535).astype(np.uint16)
    _write(tmp_path / "deep.png", deep)
    upscale_file(
        tmp_path / "deep.png",
        tmp_path / "deep-out.png",
        UpscaleRequest("quick-clear-4x", 2, "png"),
        settings=SETTINGS,
    )
    out = pyvips.Image.new_from_file(str(tmp_path / "deep-out.png"))
    assert out.format == "ushort" and (out.width, out.height) == (72, 60)
    expected = plain_ncnn("realesr-animevideov3-x2", deep.astype(np.float32) / 65535)
    assert np.abs(out.numpy().astype(float) / 65535 - expected).max() < 2 / 65535 * 257


def test_exif_orientation_is_applied(photo, tmp_path):
    pixels = np.round(photo[100:130, 200:240] * 255).astype(np.uint8)
    image = pyvips.Image.new_from_array(pixels).copy()
    image.set_type(pyvips.GValue.gint_type, "orientation", 6)
    image.jpegsave(str(tmp_path / "rotated.jpg"), Q=95)
    result = upscale_file(
        tmp_path / "rotated.jpg",
        tmp_path / "out.png",
        UpscaleRequest("quick-clear-4x", 2, "png"),
        settings=SETTINGS,
    )
    assert (result.width, result.height) == (60, 80)


def test_progress_counts_every_tile_of_every_pass(photo, tmp_path):
    pixels = np.round(photo[:70, :100] * 255).astype(np.uint8)
    source = _write(tmp_path / "in.png", pixels)
    seen: list[float] = []
    settings = EngineSettings(threads=2, use_gpu=False, backend="ncnn", tile_size=32)
    upscale_file(
        source,
        tmp_path / "out.png",
        UpscaleRequest("quick-clear-4x", 8, "png"),
        settings=settings,
        progress=seen.append,
    )
    # 8x = 4x pass on 100x70 (4x3 tiles of 32) then 2x pass on 400x280 (13x9 tiles).
    assert len(seen) == 12 + 117 + 1
    assert seen == sorted(seen) and seen[-1] == 1.0


def test_cancel_stops_between_tiles_and_leaves_no_output(photo, tmp_path):
    source = _write(tmp_path / "in.png", np.round(photo[:80, :80] * 255).astype(np.uint8))
    settings = EngineSettings(
        threads=2, use_gpu=False, backend="ncnn", tile_size=32, work_dir=tmp_path / "work"
    )
    (tmp_path / "work").mkdir()
    with pytest.raises(CancelledError):
        upscale_file(
            source,
            tmp_path / "out.png",
            UpscaleRequest("quick-clear-4x", 4, "png"),
            settings=settings,
            should_cancel=lambda: True,
        )
    assert not (tmp_path / "out.png").exists()
    assert list((tmp_path / "work").iterdir()) == []


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        (UpscaleRequest("no-such-model", 4, "png"), UnknownModelError),
        (UpscaleRequest("quick-clear-4x", 3, "png"), InvalidOptionError),
        (UpscaleRequest("quick-clear-4x", 4, "gif"), InvalidOptionError),  # type: ignore[arg-type]
        (UpscaleRequest("quick-clear-4x", 4, "jpg", quality=0), InvalidOptionError),
    ],
)
def test_bad_requests_are_refused(request_, error, photo, tmp_path):
    source = _write(tmp_path / "in.png", np.round(photo[:20, :20] * 255).astype(np.uint8))
    with pytest.raises(error):
        upscale_file(source, tmp_path / "out.png", request_, settings=SETTINGS)


def test_bad_files_are_refused(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InvalidImageError):
        upscale_file(
            tmp_path / "empty.png",
            tmp_path / "out.png",
            UpscaleRequest("quick-clear-4x"),
            settings=SETTINGS,
        )


def test_an_impossible_output_fails_before_any_work(tmp_path):
    pyvips.Image.black(5000, 10).pngsave(str(tmp_path / "wide.png"))
    calls: list[float] = []
    with pytest.raises(ImageTooLargeError, match="16383"):
        upscale_file(
            tmp_path / "wide.png",
            tmp_path / "out.webp",
            UpscaleRequest("quick-clear-4x", 4, "webp"),
            settings=SETTINGS,
            progress=calls.append,
        )
    assert calls == []


def test_a_grey_source_gives_a_grey_webp(photo, tmp_path):
    # The network returns a grey input's three channels slightly unequal (a
    # tint of up to 5/255 here before they were averaged for WebP too).
    grey = np.round(photo[100:130, 200:236, 1] * 255).astype(np.uint8)
    ramp = np.tile(np.arange(36, dtype=np.uint8) * 7, (30, 1))
    for name, pixels in [("grey", grey[:, :, None]), ("grey-alpha", np.dstack([grey, ramp]))]:
        source = tmp_path / f"{name}.png"
        pyvips.Image.new_from_array(pixels).copy(interpretation="b-w").pngsave(str(source))
        out = tmp_path / f"{name}.webp"
        upscale_file(
            source, out, UpscaleRequest("quick-clear-4x", 2, "webp", 100), settings=SETTINGS
        )
        got = _read(out).astype(int)
        assert got.shape == (60, 72, pixels.shape[2] + 2)
        # Lossy WebP's YUV rounding: 1 at most.
        assert np.abs(got[:, :, 0] - got[:, :, 1]).max() <= 1
        assert np.abs(got[:, :, 2] - got[:, :, 1]).max() <= 1


@pytest.mark.parametrize("model", ["quick-clear-4x", "digital-art-plus-4x"])
@pytest.mark.parametrize(("width", "height"), [(1, 1), (1, 7), (7, 1)])
def test_one_pixel_wide_images_upscale(model, width, height, tmp_path):
    source = _write(tmp_path / "in.png", np.full((height, width, 3), (200, 50, 50), np.uint8))
    result = upscale_file(
        source, tmp_path / "out.jpg", UpscaleRequest(model, 4, "jpg", 95), settings=SETTINGS
    )
    assert (result.width, result.height) == (4 * width, 4 * height)
    got = _read(tmp_path / "out.jpg").astype(int)
    assert got.shape == (4 * height, 4 * width, 3)
    # Within 30: the networks see zeros past the edges, which darkens a
    # one-pixel image a little (quick-clear: red 200 -> 179).
    assert np.abs(got.mean(axis=(0, 1)) - (200, 50, 50)).max() < 30


def test_opaque_and_transparent_areas_stay_exactly_so(photo, tmp_path):
    # The network gave 254.5/255 for opaque areas and up to 1/255 for empty
    # ones: a cut-out turned faintly see-through, its background not empty.
    rgba = np.zeros((24, 32, 4), np.uint8)
    rgba[:, 16:, :3] = np.round(photo[100:124, 200:216] * 255)
    rgba[:, 16:, 3] = 255
    rgba[8:16, 20:28, 3] = 128  # a half-transparent window inside
    source = _write(tmp_path / "in.png", rgba)
    for fmt in ("png", "webp"):
        upscale_file(
            source,
            tmp_path / f"out.{fmt}",
            UpscaleRequest("quick-clear-4x", 4, fmt, 100),
            settings=SETTINGS,
        )
        alpha = _read(tmp_path / f"out.{fmt}")[:, :, 3]
        assert (alpha[:, : 4 * 15] == 0).all()
        assert (alpha[: 4 * 7, 4 * 17 :] == 255).all() and (alpha[4 * 17 :, 4 * 29 :] == 255).all()
        assert (alpha[4 * 9 : 4 * 15, 4 * 21 : 4 * 27] == 128).all()
        assert 0 < alpha[:, 4 * 16 - 2 : 4 * 16 + 2].mean() < 255  # the edge is the network's


@pytest.mark.parametrize(
    ("width", "height", "request_", "alpha", "sixteen", "expected"),
    [
        # One 4x pass, RGB: encode holds the decoded source (3 x 5000 px x 2
        # bytes), the colour output (3 x 80000 x 2) and the encoded bound
        # (3 x 80000 x 1 byte): 30000 + 480000 + 240000.
        (100, 50, UpscaleRequest("quick-clear-4x", 4, "png"), False, False, 750_000),
        # 16-bit PNG with alpha: encoded at 2 bytes x 4 bands:
        # 40000 + 480000 + 160000 + 640000.
        (100, 50, UpscaleRequest("quick-clear-4x", 4, "png"), True, True, 1_320_000),
        # 8x as 4x then 2x, RGBA: the alpha phase (colour output 1920000 +
        # the network's alpha and its bounded copy 2 x 320000 x 2) is below
        # encode's 40000 + 1920000 + 640000 + 4 x 320000.
        (100, 50, UpscaleRequest("quick-clear-4x", 8, "png"), True, False, 3_880_000),
        # ... and as JPEG (3 bands, the alpha flattened away): 40000 +
        # 1920000 + 640000 + 3 x 320000, still above the alpha phase's 40000
        # + 1920000 + 2 x 640000.
        (100, 50, UpscaleRequest("quick-clear-4x", 8, "jpg"), True, False, 3_560_000),
        # 3x then 3x, resized to 8x: the 9x plane beside the 8x resize is the
        # peak, 600 + 3 x (8100 + 6400) x 2.
        (10, 10, UpscaleRequest("crystal-plus-4x", 8, "jpg"), False, False, 87_600),
        # A 4x network shrunk to 2x: 600 + 3 x (1600 + 400) x 2.
        (10, 10, UpscaleRequest("upscayl-standard-4x", 2, "jpg"), False, False, 12_600),
    ],
)
def test_work_space_estimate_arithmetic(width, height, request_, alpha, sixteen, expected):
    estimate = work_space_bytes(width, height, request_, has_alpha=alpha, sixteen_bit=sixteen)
    assert estimate == expected
    # The source file is added whole, beside every phase.
    with_source = work_space_bytes(
        width, height, request_, has_alpha=alpha, sixteen_bit=sixteen, source_bytes=1234
    )
    assert with_source == expected + 1234


def test_work_space_estimate_for_the_largest_outputs():
    """The sizes docs/deployment.md ("Sizing") gives: about 12 GB for the
    3950x3950 RGBA PNG at 8x (998 MP), 16.1 GB at most within the default
    limits (a 16-bit RGBA PNG at 8x)."""
    png8 = UpscaleRequest("quick-clear-4x", 8, "png")
    assert round(work_space_bytes(3950, 3950, png8, has_alpha=True) / 1e9, 1) == 12.1
    largest = max(
        work_space_bytes(3952, 3952, UpscaleRequest(name, 8, "png"), has_alpha=True, sixteen_bit=s)
        for name in MODELS
        for s in (False, True)
    )
    assert round(largest / 1e9, 1) == 16.1


def test_work_space_estimate_covers_a_real_run(photo, tmp_path):
    """The estimate against the work folder's real peak (its files' sizes
    summed every 5 ms while the engine runs): at or above it, and within 2x.
    Sampling can only miss a peak, never invent one."""
    size = 320
    image = pyvips.Image.new_from_array(np.round(photo * 255).astype(np.uint8))
    image = image.resize(size / image.width, vscale=size / image.height).cast("uchar")
    yy, xx = np.mgrid[0:size, 0:size]
    alpha = pyvips.Image.new_from_array(((xx + yy) * 255 // (2 * size)).astype(np.uint8))
    work = tmp_path / "work"
    work.mkdir()
    source = work / "in.png"
    image.bandjoin(alpha).copy(interpretation="srgb").pngsave(str(source))

    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            total = 0
            for parent, _dirs, names in os.walk(work):
                for name in names:
                    with contextlib.suppress(FileNotFoundError):
                        total += os.stat(os.path.join(parent, name)).st_size
            peak = max(peak, total)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    request = UpscaleRequest("quick-clear-4x", 4, "png")
    settings = EngineSettings(threads=2, use_gpu=False, backend="ncnn", work_dir=work)
    try:
        upscale_file(source, work / "out.png", request, settings=settings)
    finally:
        stop.set()
        sampler.join()
    estimate = work_space_bytes(
        size, size, request, has_alpha=True, source_bytes=source.stat().st_size
    )
    assert peak <= estimate <= 2 * peak, (peak, estimate)
