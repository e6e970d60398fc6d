"""Tiny ONNX face "restorers" built in the tests, honouring the contract or not.

Each is a real ONNX graph run by onnxruntime through the production loading
code; their outputs are known in closed form, so the paste-back can be
checked numerically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IMAGE = [1, 3, 512, 512]


def _save(path: Path, nodes, inputs, outputs, initializers=()) -> Path:
    graph = helper.make_graph(nodes, "face", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _io(name: str, shape=IMAGE, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def _const(name: str, value: float) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(value, np.float32), name)


def invert(path: Path, shape=IMAGE) -> Path:
    """out = -x: in 0..1 terms, 1 - v (a negative image)."""
    return _save(
        path, [helper.make_node("Neg", ["x"], ["y"])], [_io("x", shape)], [_io("y", shape)]
    )


def affine(path: Path, gain: float, bias: float, in_shape=IMAGE, out_shape=IMAGE) -> Path:
    """out = gain * x + bias, not clipped (for range tests)."""
    nodes = [
        helper.make_node("Mul", ["x", "gain"], ["scaled"]),
        helper.make_node("Add", ["scaled", "bias"], ["y"]),
    ]
    inits = [_const("gain", gain), _const("bias", bias)]
    return _save(path, nodes, [_io("x", in_shape)], [_io("y", out_shape)], inits)


def brighten(path: Path, amount: float) -> Path:
    """out = clip(x + amount, -1, 1)."""
    nodes = [
        helper.make_node("Add", ["x", "amount"], ["raised"]),
        helper.make_node("Clip", ["raised", "low", "high"], ["y"]),
    ]
    inits = [_const("amount", amount), _const("low", -1.0), _const("high", 1.0)]
    return _save(path, nodes, [_io("x")], [_io("y")], inits)


def grey_output(path: Path) -> Path:
    """A 1-channel output: the wrong shape."""
    node = helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=1)
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    return _save(path, [node], [_io("x")], [_io("y", [1, 1, 512, 512])], [axes])


def with_fidelity(path: Path) -> Path:
    """CodeFormer-like: image plus a double scalar ``w``; out = x * 2w
    (the identity at CodeFormer's default w = 0.5)."""
    nodes = [
        helper.make_node("Cast", ["w"], ["wf"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["wf", "wf"], ["w2"]),
        helper.make_node("Mul", ["x", "w2"], ["y"]),
    ]
    inputs = [_io("x", ["batch", 3, 512, 512]), _io("w", [1], TensorProto.DOUBLE)]
    return _save(path, nodes, inputs, [_io("y", ["batch", 3, 512, 512])])


def nan_output(path: Path) -> Path:
    """out = log(x - 2): NaN everywhere."""
    nodes = [
        helper.make_node("Sub", ["x", "two"], ["shifted"]),
        helper.make_node("Log", ["shifted"], ["y"]),
    ]
    return _save(path, nodes, [_io("x")], [_io("y")], [_const("two", 2.0)])


def tint(path: Path, gains: tuple[float, float, float]) -> Path:
    """out = x * gain per channel: colours a grey face."""
    gain = numpy_helper.from_array(np.array(gains, np.float32).reshape(1, 3, 1, 1), "gain")
    node = helper.make_node("Mul", ["x", "gain"], ["y"])
    return _save(path, [node], [_io("x")], [_io("y")], [gain])
