"""Every network of the catalog: its files, its blobs, its conventions, its tiles."""

from pathlib import Path

import numpy as np
import pytest
from skimage.transform import resize

from tests.engine.memory import anonymous_mib
from tests.engine.reference import plain_ncnn, psnr
from upscayl_cloud.engine.networks import NETWORKS
from upscayl_cloud.engine.options import EngineSettings
from upscayl_cloud.engine.planes import Plane, to_float
from upscayl_cloud.engine.runner import load_network
from upscayl_cloud.engine.tiling import auto_tile_size, upscale_plane
from upscayl_cloud.engine.weights import locate

ALL = sorted(NETWORKS)
RRDB = {"realesrgan-x4plus", "realesrgan-x4plus-anime", "realsr-df2k-x4"}
NCNN = EngineSettings(threads=2, use_gpu=False, backend="ncnn")


def _param_blobs(key: str) -> tuple[str, set[str], set[str]]:
    """(input blob, every produced blob, every consumed blob) of a .param file."""
    spec = NETWORKS[key]
    lines = locate(spec.distribution, spec.stem).param.read_text().splitlines()[2:]
    produced, consumed, input_blob = set(), set(), None
    for line in lines:
        fields = line.split()
        n_in, n_out = int(fields[2]), int(fields[3])
        ins, outs = fields[4 : 4 + n_in], fields[4 + n_in : 4 + n_in + n_out]
        if fields[0] == "Input":
            input_blob = outs[0]
        consumed.update(ins)
        produced.update(outs)
    return input_blob, produced, consumed


@pytest.mark.parametrize("key", ALL)
def test_blob_names_come_from_the_param_file(key):
    spec = NETWORKS[key]
    input_blob, produced, consumed = _param_blobs(key)
    assert input_blob == spec.input_blob
    assert spec.output_blob in produced and spec.output_blob not in consumed
    assert set(spec.global_pools) <= produced


@pytest.mark.parametrize("key", ALL)
def test_licence_and_origin_are_recorded(key):
    assert NETWORKS[key].licence and NETWORKS[key].origin


@pytest.mark.parametrize("key", ALL)
def test_conventions_restore_a_downscaled_photo(key, photo):
    """RGB in 0..1 and the mirrored context are right if a downscaled real
    photo comes back at the right size, colour and sharpness: the sanity floor
    measured in ARCHITECTURE.md (mean within 9/255, PSNR within 5 dB of bicubic).
    A wrong range or a missing context fails this by far."""
    s = NETWORKS[key].scale
    size = 24 if key in RRDB else 48
    original = photo[100 : 100 + size * s, 200 : 200 + size * s]
    small = original.reshape(size, s, size, s, 3).mean(axis=(1, 3))
    restored = plain_ncnn(key, small)
    assert restored.shape == original.shape
    channel_error = np.abs(restored.mean(axis=(0, 1)) - original.mean(axis=(0, 1)))
    assert channel_error.max() < 9 / 255
    bicubic = np.clip(resize(small, original.shape, order=3), 0, 1)
    assert psnr(restored, original) > psnr(bicubic, original) - 5


@pytest.mark.parametrize("key", ALL)
def test_tiles_match_the_untiled_network(key, photo, tmp_path):
    """Tiled through the engine (overlap, context, sync of global means) against
    one plain ncnn call on the whole crop: compact and unpadded networks within
    2/255 on every pixel, deep RRDB and Real-CUGAN at PSNR >= 42 dB."""
    crop = photo[60:140, 120:216] if key in RRDB else photo[40:200, 100:292]
    tile = 32 if key in RRDB else 48
    samples = Plane.from_array(tmp_path / "in.raw", crop)
    runner = load_network(key, NCNN)
    tiled = to_float(upscale_plane(runner, samples, tmp_path / "out.raw", tile).read_all())
    reference = plain_ncnn(key, to_float(samples.read_all()))
    assert tiled.shape == reference.shape
    if key in RRDB or NETWORKS[key].global_pools:
        assert psnr(tiled, reference) >= 42
    else:
        assert np.abs(np.round(tiled * 255) - np.round(reference * 255)).max() <= 2


MIRRORED = [key for key, spec in NETWORKS.items() if spec.mirror_edges]


@pytest.mark.parametrize("key", MIRRORED)
def test_mirrored_edges_keep_a_flat_colour_flat_to_the_border(key, tmp_path):
    """Fed bare, these networks shift a flat red at the image's border by
    22-44 levels (a red background's dark corner, bench/edge_padding.py);
    with the edges mirrored, as upstream does, by at most 10."""
    red = np.broadcast_to(np.array([200, 50, 50], np.float32) / 255, (12, 12, 3)).copy()
    samples = Plane.from_array(tmp_path / "in.raw", red)
    runner = load_network(key, NCNN)
    out = to_float(upscale_plane(runner, samples, tmp_path / "out.raw", 512).read_all())
    assert np.abs(out * 255 - np.array([200, 50, 50])).max() <= 10


def test_a_network_is_loaded_once_per_process():
    assert load_network("span-x2-ch48", NCNN) is load_network("span-x2-ch48", NCNN)


@pytest.mark.parametrize(
    ("key", "size"),
    [("realcugan-se-up2x-conservative", 36), ("realcugan-se-up2x-conservative", 38)],
)
def test_impossible_geometry_is_refused_before_ncnn_sees_it(key, size):
    """Real-CUGAN 2x crashes the process on 32x32; we refuse such inputs."""
    runner = load_network(key, NCNN)
    with pytest.raises(ValueError, match="cannot take"):
        runner.run(np.zeros((3, size, size), np.float32))


@pytest.mark.parametrize("key", ALL)
@pytest.mark.parametrize("memory_mb", [256, 3072])
@pytest.mark.parametrize("backend", ["ncnn", "openvino"])
def test_automatic_tiles_fit_the_memory_budget(key, memory_mb, backend):
    runner = load_network(key, EngineSettings(threads=2, use_gpu=False, backend=backend))
    core = auto_tile_size(runner, memory_mb)
    spec = runner.spec
    source = core + 2 * max(spec.tile_pad, spec.context)
    assert core % spec.align == 0 and core >= 32
    if core > 32:
        assert source * source * runner.kib_per_pixel <= memory_mb * 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_a_pass_hands_its_network_memory_back(photo, tmp_path):
    """ncnn's own pools would keep each network's peak (about 1 GB here) for
    the life of the process; a worker that has used several models would hold
    the sum. After a pass, the runner's pools are cleared."""
    runner = load_network("realesrgan-x4plus-anime", NCNN)
    samples = Plane.from_array(tmp_path / "in.raw", photo[:128, :128])
    before = anonymous_mib()
    upscale_plane(runner, samples, tmp_path / "out.raw", 128)
    assert anonymous_mib() - before < 300
