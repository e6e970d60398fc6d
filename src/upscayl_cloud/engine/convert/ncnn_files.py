"""Read an ncnn network: the ``.param`` text graph and the ``.bin`` weights.

The format is ncnn's own (``src/paramdict.cpp`` and ``src/modelbin.cpp``):
a magic line, a ``layers blobs`` line, then one layer per line as
``Type name n_in n_out inputs... outputs... key=value...``. Keys below
-23300 hold arrays (``-23300 - key`` is the real id, the value is
``count,v1,v2...``). The ``.bin`` is the layers' weights in file order,
with no index: each layer reads what its own parameters say it has, so a
reader must walk every layer, in order, to find any one of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MAGIC = 7767517
_ARRAY_KEY_BASE = -23300

#: Tags a weight blob may start with (``ModelBinFromDataReader::load``).
_TAG_FP16 = 0x01306B47
_TAG_INT8 = 0x000D4B38
_TAG_RAW_FP32 = 0x0002C056

ParamValue = int | float | list[int] | list[float]


class NcnnFormatError(ValueError):
    """The files are not an ncnn network this reader understands."""


@dataclass(frozen=True)
class Layer:
    type: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: dict[int, ParamValue] = field(default_factory=dict)

    def int(self, key: int, default: int) -> int:
        value = self.params.get(key, default)
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise NcnnFormatError(f"{self.name}: parameter {key} is not a number")
        return int(value)

    def float(self, key: int, default: float) -> float:
        value = self.params.get(key, default)
        if not isinstance(value, int | float):
            raise NcnnFormatError(f"{self.name}: parameter {key} is not a number")
        return float(value)

    def array(self, key: int) -> list[float]:
        value = self.params.get(key, [])
        return [float(v) for v in value] if isinstance(value, list) else [float(value)]


def read_param(path: Path) -> list[Layer]:
    """The layers of a ``.param`` file, in file (= weight) order."""
    lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    if not lines or lines[0] != [str(MAGIC)]:
        raise NcnnFormatError(f"{path.name} is not an ncnn param file (no magic {MAGIC})")
    layers: list[Layer] = []
    for number, words in enumerate(lines[2:], start=3):
        try:
            kind, name, n_in, n_out = words[0], words[1], int(words[2]), int(words[3])
            blobs = words[4 : 4 + n_in + n_out]
            if len(blobs) != n_in + n_out:
                raise ValueError("fewer blob names than counted")
            params = dict(_parse_param(item) for item in words[4 + n_in + n_out :])
        except (IndexError, ValueError) as exc:
            raise NcnnFormatError(f"{path.name} line {number} is not a layer: {exc}") from exc
        layers.append(Layer(kind, name, tuple(blobs[:n_in]), tuple(blobs[n_in:]), params))
    return layers


def _parse_param(item: str) -> tuple[int, ParamValue]:
    key_text, _, value_text = item.partition("=")
    key = int(key_text)
    if key <= _ARRAY_KEY_BASE:
        count, *values = value_text.split(",")
        if len(values) != int(count):
            raise NcnnFormatError(f"array parameter {item!r} has a wrong count")
        return _ARRAY_KEY_BASE - key, [_number(v) for v in values]
    return key, _number(value_text)


def _number(text: str) -> int | float:
    return float(text) if any(c in text for c in ".eE") else int(text)


class WeightReader:
    """Sequential reader over a ``.bin`` file, as ncnn's ``ModelBin``."""

    def __init__(self, path: Path) -> None:
        self._data = memoryview(path.read_bytes())
        self._offset = 0
        self._path = path

    def raw(self, count: int) -> np.ndarray:
        """``count`` float32 values with no tag (ncnn's ``load(w, 1)``): biases,
        slopes, constants."""
        return self._take(count * 4, np.float32)[:count]

    def tagged(self, count: int) -> np.ndarray:
        """A weight blob with its 4-byte storage tag (ncnn's ``load(w, 0)``)."""
        tag = int(self._take(4, np.uint32)[0])
        if tag == _TAG_FP16:
            halves = self._take(_align4(count * 2), np.float16)[:count]
            return halves.astype(np.float32)
        if tag == _TAG_INT8:
            raise NcnnFormatError(f"{self._path.name}: int8 weights are not supported")
        if tag == _TAG_RAW_FP32 or tag == 0:
            return self.raw(count)
        # Any other non-zero tag: a 256-entry table, then one byte per
        # weight indexing it.
        table = self.raw(256)
        indices = self._take(_align4(count), np.uint8)[:count]
        return table[indices]

    def remaining(self) -> int:
        return len(self._data) - self._offset

    def _take(self, size: int, dtype: type) -> np.ndarray:
        if self._offset + size > len(self._data):
            raise NcnnFormatError(f"{self._path.name} ends before its last layer's weights")
        chunk = np.frombuffer(self._data[self._offset : self._offset + size], dtype=dtype)
        self._offset += size
        return chunk


def _align4(size: int) -> int:
    return (size + 3) // 4 * 4
