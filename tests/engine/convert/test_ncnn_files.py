"""The ncnn file reader, on the shipped files and on hand-made ones that
exercise each weight storage ncnn defines."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from upscayl_cloud.engine.convert.ncnn_files import NcnnFormatError, WeightReader, read_param
from upscayl_cloud.engine.networks import NETWORKS
from upscayl_cloud.engine.weights import locate


def _files(key: str):
    spec = NETWORKS[key]
    return locate(spec.distribution, spec.stem)


def test_a_shipped_param_file_reads_layer_by_layer():
    files = _files("realcugan-se-up2x-conservative")
    header = files.param.read_text().splitlines()[1].split()
    layers = read_param(files.param)
    assert len(layers) == int(header[0])
    crop = next(layer for layer in layers if layer.type == "Crop")
    # "-23309=2,4,4 -23310=2,-4,-4 -23311=2,-2,-1": arrays under ids 9, 10, 11.
    assert (crop.array(9), crop.array(10), crop.array(11)) == ([4, 4], [-4, -4], [-2, -1])
    conv = next(layer for layer in layers if layer.type == "Convolution")
    assert (conv.int(0, 0), conv.int(1, 0), conv.int(9, 0)) == (32, 3, 2)
    assert conv.array(10) == pytest.approx([0.1])


def test_a_file_without_the_magic_is_refused(tmp_path: Path):
    path = tmp_path / "x.param"
    path.write_text("not a network\n")
    with pytest.raises(NcnnFormatError, match="magic"):
        read_param(path)


def _write(tmp_path: Path, payload: bytes) -> WeightReader:
    path = tmp_path / "w.bin"
    path.write_bytes(payload)
    return WeightReader(path)


def test_fp16_weights_are_widened_and_padded_to_four_bytes(tmp_path: Path):
    values = np.array([0.5, -1.25, 3.0], np.float16)
    tag = struct.pack("<I", 0x01306B47)
    reader = _write(tmp_path, tag + values.tobytes() + b"\0\0" + np.float32(7).tobytes())
    assert reader.tagged(3).tolist() == [0.5, -1.25, 3.0]
    assert reader.raw(1).tolist() == [7.0]  # the padding was skipped
    assert reader.remaining() == 0


def test_untagged_fp32_weights(tmp_path: Path):
    values = np.array([1.5, -2.0], np.float32)
    reader = _write(tmp_path, struct.pack("<I", 0) + values.tobytes())
    assert reader.tagged(2).tolist() == [1.5, -2.0]


def test_table_quantised_weights(tmp_path: Path):
    table = np.linspace(-1, 1, 256, dtype=np.float32)
    indices = np.array([0, 255, 128], np.uint8)
    payload = bytes([1, 0, 0, 0]) + table.tobytes() + indices.tobytes() + b"\0"
    assert _write(tmp_path, payload).tagged(3).tolist() == table[[0, 255, 128]].tolist()


def test_int8_weights_are_refused_by_name(tmp_path: Path):
    reader = _write(tmp_path, struct.pack("<I", 0x000D4B38) + b"\0" * 8)
    with pytest.raises(NcnnFormatError, match="int8"):
        reader.tagged(8)


def test_a_truncated_weight_file_is_refused(tmp_path: Path):
    reader = _write(tmp_path, struct.pack("<I", 0) + b"\0" * 8)
    with pytest.raises(NcnnFormatError, match="ends before"):
        reader.tagged(3)


def test_a_garbled_layer_line_is_a_format_error(tmp_path: Path):
    path = tmp_path / "x.param"
    path.write_text("7767517\n2 2\nInput in 0 1 data\nConvolution c 1 one data out\n")
    with pytest.raises(NcnnFormatError, match="line 4"):
        read_param(path)
