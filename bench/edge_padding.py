"""What a padded network should be fed beyond the image's edges.

A padded network (Real-ESRGAN, RealSR, SPAN) keeps the input size because its
convolutions pad with zeros. Fed the bare image, its border pixels see those
zeros; upstream's ncnn programs instead mirror ``prepadding`` pixels around
the image before the call (Real-ESRGAN-ncnn-vulkan's preprocessing shader
reflects the coordinates). Which is better is measured here, per network,
two ways, for three ways of feeding the border:

* ``bare``: the image as it is (the network's zeros at the border);
* ``reflect``: mirrored by ``--border`` pixels (default: the engine's
  ``geometry.MIRRORED_EDGE``, capped at ``tile_pad``) without repeating the edge pixel
  (what upstream does), cropped off the output again;
* ``edge``: the edge pixel repeated as many times.

1. Flat colours (24x24: white, a red, mid grey, black, a dark blue): the
   largest shift of any output pixel from the input colour, in 8-bit levels.
   A flat area should stay flat; a shifted border shows as a dark or light
   frame or corner.
2. Real photos: a 24x24 crop of scikit-image's photos (chelsea, astronaut,
   coffee, rocket, random places) is upscaled alone, and compared, in the band
   of 3 input pixels along its edges, with the same pixels upscaled inside
   40 more pixels of their real surroundings. The closer, the better the
   border guesses what the image would have continued as. Reported: the
   median PSNR of that band for each way. The crops are drawn from a seed
   of the network's own (:func:`crop_seed`), so a row comes out the same
   whether its network runs alone (``--networks X``) or in the list.

Runs on the CPU with plain ncnn (tests/engine/reference.py's loader); about
two minutes for all padded networks on two cores.

    PYTHONPATH=. .venv/bin/python bench/edge_padding.py [--crops 16] [--border 10]
        [--networks a,b]
"""

from __future__ import annotations

import argparse
import zlib

import ncnn
import numpy as np
from skimage import data

from tests.engine.reference import plain_net, psnr
from upscayl_cloud.engine.geometry import MIRRORED_EDGE
from upscayl_cloud.engine.networks import NETWORKS

FLAT = {
    "white": (255, 255, 255),
    "red": (200, 50, 50),
    "grey": (128, 128, 128),
    "black": (0, 0, 0),
    "dark blue": (20, 30, 90),
}
WAYS = ("bare", "reflect", "edge")
SIZE = 24
SURROUNDINGS = 40


def upscale(key: str, rgb: np.ndarray, way: str, border: int = MIRRORED_EDGE) -> np.ndarray:
    """``rgb`` (H x W x 3, 0..1) through the network, fed its border ``way``."""
    spec = NETWORKS[key]
    m = 0 if way == "bare" else min(border, spec.tile_pad)
    fed = rgb if m == 0 else np.pad(rgb, ((m, m), (m, m), (0, 0)), mode=way)
    chw = np.ascontiguousarray(fed.transpose(2, 0, 1), dtype=np.float32)
    with plain_net(key).create_extractor() as ex:
        ex.input(spec.input_blob, ncnn.Mat(chw))
        status, out = ex.extract(spec.output_blob)
        assert status == 0
        result = np.array(out, copy=True).transpose(1, 2, 0)
    s, h, w = spec.scale, rgb.shape[0], rgb.shape[1]
    return np.clip(result[s * m : s * (m + h), s * m : s * (m + w)], 0.0, 1.0)


def flat_shifts(key: str, border: int) -> dict[str, dict[str, int]]:
    shifts: dict[str, dict[str, int]] = {way: {} for way in WAYS}
    for name, colour in FLAT.items():
        rgb = np.broadcast_to(np.array(colour, np.float32) / 255, (SIZE, SIZE, 3)).copy()
        for way in WAYS:
            out = upscale(key, rgb, way, border) * 255
            shifts[way][name] = int(np.abs(out - np.array(colour)).max().round())
    return shifts


def crop_seed(key: str) -> int:
    """The seed of ``key``'s random crops: its name's CRC-32. One generator
    for the whole run gave each network the crops left over by those
    before it, so a README row could not be reproduced with ``--networks``
    alone."""
    return zlib.crc32(key.encode())


def photo_band_psnr(key: str, crops: int, border: int) -> dict[str, float]:
    rng = np.random.default_rng(crop_seed(key))
    photos = [data.chelsea(), data.astronaut(), data.coffee(), data.rocket()]
    photos = [p.astype(np.float32) / 255 for p in photos]
    s, c = NETWORKS[key].scale, SURROUNDINGS
    band = np.ones((s * SIZE, s * SIZE), bool)
    band[s * 3 : -s * 3, s * 3 : -s * 3] = False
    scores: dict[str, list[float]] = {way: [] for way in WAYS}
    for i in range(crops):
        photo = photos[i % len(photos)]
        y = int(rng.integers(c, photo.shape[0] - SIZE - c))
        x = int(rng.integers(c, photo.shape[1] - SIZE - c))
        wide = photo[y - c : y + SIZE + c, x - c : x + SIZE + c]
        truth = upscale(key, wide, "bare")[s * c : s * (c + SIZE), s * c : s * (c + SIZE)]
        crop = wide[c : c + SIZE, c : c + SIZE]
        for way in WAYS:
            scores[way].append(psnr(upscale(key, crop, way, border)[band], truth[band]))
    return {way: float(np.median(values)) for way, values in scores.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crops", type=int, default=16)
    parser.add_argument("--border", type=int, default=MIRRORED_EDGE)
    padded = [key for key, spec in NETWORKS.items() if spec.padded and spec.tile_pad]
    parser.add_argument("--networks", default=",".join(padded))
    args = parser.parse_args()
    print(f"# mirrored border: {args.border} px (capped at each network's tile_pad)")
    print(
        "| network | mirrored now | feed | flat: largest shift (white, red, grey, black, "
        "dark blue) | photos: border band PSNR vs real surroundings (median) |"
    )
    print("|---|---|---|---|---|")
    for key in args.networks.split(","):
        shifts = flat_shifts(key, args.border)
        bands = photo_band_psnr(key, args.crops, args.border)
        for way in WAYS:
            flat = ", ".join(str(v) for v in shifts[way].values())
            mirrored = "yes" if NETWORKS[key].mirror_edges else "no"
            print(f"| {key} | {mirrored} | {way} | {flat} | {bands[way]:.2f} dB |", flush=True)


if __name__ == "__main__":
    main()
