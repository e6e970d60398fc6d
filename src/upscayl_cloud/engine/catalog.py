"""The spec's twelve model names, each a real pipeline of networks.

A pipeline is an ordered list of steps per output scale: ``Run`` one network
pass, or ``Shrink`` the intermediate image by an exact integer factor with a
high-quality filter. After the steps the result is resized to exactly
``scale x input`` (a no-op when the passes land on it). Scales never come
from plain interpolation above a network's own scale: 8x is always two real
passes. Why each model uses the networks it does is in docs/models.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from upscayl_cloud.engine.errors import InvalidOptionError, UnknownModelError
from upscayl_cloud.engine.networks import NETWORKS


@dataclass(frozen=True)
class Run:
    network: str


@dataclass(frozen=True)
class Shrink:
    factor: int


Step = Run | Shrink


@dataclass(frozen=True)
class ModelSpec:
    name: str
    title: str
    description: str
    plans: dict[int, tuple[Step, ...]]

    def plan(self, scale: int) -> tuple[Step, ...]:
        try:
            return self.plans[scale]
        except KeyError:
            raise InvalidOptionError(
                f"scale must be one of {sorted(self.plans)}, not {scale}"
            ) from None

    def networks(self) -> list[str]:
        seen: dict[str, None] = {}
        for steps in self.plans.values():
            for step in steps:
                if isinstance(step, Run):
                    seen.setdefault(step.network)
        return list(seen)


def _four_x_only(net: str) -> dict[int, tuple[Step, ...]]:
    """A model with a 4x network only: 2x is the 4x pass shrunk by two; 8x is
    a 4x pass, shrunk to 2x, then a second 4x pass (4x + 16x of the input's
    pixels of work instead of 4x + 64x for a second pass at full size)."""
    return {
        2: (Run(net), Shrink(2)),
        4: (Run(net),),
        8: (Run(net), Shrink(2), Run(net)),
    }


def _four_and_two(net4: str, net2: str) -> dict[int, tuple[Step, ...]]:
    """A model with native 4x and 2x networks: 8x is 4x then 2x."""
    return {2: (Run(net2),), 4: (Run(net4),), 8: (Run(net4), Run(net2))}


_MODELS = (
    ModelSpec(
        "upscayl-standard-4x",
        "Upscayl Standard",
        "General photos: Real-ESRGAN x4plus, as in Upscayl.",
        _four_x_only("realesrgan-x4plus"),
    ),
    ModelSpec(
        "upscayl-lite-4x",
        "Upscayl Lite",
        "Fast general-purpose upscaling with the compact SPAN network (48 channels).",
        _four_and_two("span-x4-ch48", "span-x2-ch48"),
    ),
    ModelSpec(
        "quick-clear-4x",
        "Quick Clear",
        "The fastest model: Real-ESRGAN's compact AnimeVideo v3 network, clean lines.",
        _four_and_two("realesr-animevideov3-x4", "realesr-animevideov3-x2"),
    ),
    ModelSpec(
        "clear-boost-4x",
        "Clear Boost",
        "Noisy, JPEG-damaged photos: waifu2x's photo network removes the noise on a first "
        "2x pass, then SPAN upscales the cleaned image.",
        {
            2: (Run("waifu2x-upconv7-photo-noise3-x2"),),
            4: (Run("waifu2x-upconv7-photo-noise3-x2"), Run("span-x2-ch48")),
            8: (Run("waifu2x-upconv7-photo-noise3-x2"), Run("span-x4-ch48")),
        },
    ),
    ModelSpec(
        "crystal-plus-4x",
        "Crystal Plus",
        "Crisp, clean line art and illustrations: Real-CUGAN Pro, passes of 2x (and 3x for 8x).",
        {
            2: (Run("realcugan-pro-up2x-no-denoise"),),
            4: (Run("realcugan-pro-up2x-no-denoise"), Run("realcugan-pro-up2x-no-denoise")),
            8: (Run("realcugan-pro-up3x-no-denoise"), Run("realcugan-pro-up3x-no-denoise")),
        },
    ),
    ModelSpec(
        "digital-art-4x",
        "Digital Art",
        "Anime and digital art: Real-ESRGAN x4plus-anime, as in Upscayl.",
        _four_x_only("realesrgan-x4plus-anime"),
    ),
    ModelSpec(
        "digital-art-plus-4x",
        "Digital Art Plus",
        "Anime and digital art with the Real-CUGAN SE network, conservative denoise.",
        _four_and_two("realcugan-se-up4x-conservative", "realcugan-se-up2x-conservative"),
    ),
    ModelSpec(
        "natural-max-4x",
        "Natural Max",
        "Maximum fidelity to the source: SPAN 52-channel, trained without a GAN (no invention).",
        _four_and_two("span-x4-ch52", "span-x2-ch52"),
    ),
    ModelSpec(
        "natural-plus-4x",
        "Natural Plus",
        "Natural-looking photos: the 4xSPANkendata network.",
        _four_x_only("span-kendata-x4"),
    ),
    ModelSpec(
        "nature-boost-4x",
        "Nature Boost",
        "Photos of scenery: waifu2x's photo network, light denoise on the first 2x pass.",
        {
            2: (Run("waifu2x-upconv7-photo-noise1-x2"),),
            4: (Run("waifu2x-upconv7-photo-noise1-x2"), Run("waifu2x-upconv7-photo-x2")),
            8: (
                Run("waifu2x-upconv7-photo-noise1-x2"),
                Run("waifu2x-upconv7-photo-x2"),
                Run("waifu2x-upconv7-photo-x2"),
            ),
        },
    ),
    ModelSpec(
        "pure-boost-4x",
        "Pure Boost",
        "Noisy or heavily compressed art: Real-CUGAN SE with its strongest denoise.",
        _four_and_two("realcugan-se-up4x-denoise3x", "realcugan-se-up2x-denoise3x"),
    ),
    ModelSpec(
        "texture-boost-4x",
        "Texture Boost",
        "Fine texture and detail in photos: RealSR (DF2K), trained on real-world degradations.",
        _four_x_only("realsr-df2k-x4"),
    ),
)

MODELS: dict[str, ModelSpec] = {model.name: model for model in _MODELS}
DEFAULT_MODEL = "upscayl-standard-4x"


def get_model(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; choose one of: {', '.join(MODELS)}"
        ) from None


def _check_catalog() -> None:
    for model in _MODELS:
        for network in model.networks():
            if network not in NETWORKS:
                raise RuntimeError(f"{model.name} uses unknown network {network}")


_check_catalog()
