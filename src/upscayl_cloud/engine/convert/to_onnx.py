"""Build an ONNX graph from an ncnn network, weight for weight.

ONNX is the interchange other runtimes read (OpenVINO, ONNX Runtime's CPU,
CUDA and TensorRT providers), so the weights shipped for ncnn serve every
backend without a second download. Only the operators the catalog's
networks use are translated; anything else is refused by name rather than
guessed at.

ncnn blobs have no batch axis: a ``c x h x w`` blob becomes ``1 x c x h x w``
here, and a 1-D blob of ``c`` values (a global mean, an inner product's
output) becomes ``1 x c x 1 x 1``, which broadcasts against images exactly
as ncnn's per-channel binary operations do.

A graph can also be *cut*: ``outputs`` names the blobs to return (e.g.
Real-CUGAN's ``gap0``) and ``injected`` names blobs that become inputs
instead of being computed, which is how tiles receive the whole image's
global means (see ``tiling.py``). Nodes no output depends on are dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from upscayl_cloud.engine.convert.ncnn_files import Layer, NcnnFormatError, WeightReader, read_param

OPSET = 17
#: The ONNX IR version written: old enough for every runtime we support
#: (onnxruntime >= 1.21, OpenVINO), which refuse files newer than they know.
IR_VERSION = 8
_INT64_MAX = np.iinfo(np.int64).max


class UnsupportedLayerError(NcnnFormatError):
    """The network uses an ncnn operator (or option) with no translation here."""


@dataclass
class _Graph:
    """ONNX nodes being built, with ncnn blob names mapped to tensor names."""

    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    #: ncnn blob -> ONNX tensor (a Split's outputs are its input's tensor).
    tensors: dict[str, str] = field(default_factory=dict)
    _counter: int = 0

    def fresh(self, hint: str) -> str:
        self._counter += 1
        return f"{hint}__{self._counter}"

    def constant(self, hint: str, value: np.ndarray) -> str:
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def node(
        self, op: str, inputs: Sequence[str], output: str | None = None, **attrs: object
    ) -> str:
        output = output or self.fresh(op)
        self.nodes.append(helper.make_node(op, list(inputs), [output], **attrs))
        return output

    def source(self, blob: str) -> str:
        try:
            return self.tensors[blob]
        except KeyError:
            raise NcnnFormatError(f"blob {blob!r} is used before any layer makes it") from None


Translate = Callable[[_Graph, Layer, WeightReader, list[str]], str]


def build_onnx(
    param: Path,
    weights: Path,
    input_blob: str,
    outputs: Sequence[str],
    injected: Iterable[str] = (),
    channels: int = 3,
) -> onnx.ModelProto:
    """The network as an ONNX model with a ``1 x channels x H x W`` input
    named ``input_blob`` (height and width left symbolic)."""
    layers = read_param(param)
    reader = WeightReader(weights)
    graph = _Graph()
    injected = tuple(injected)
    graph_inputs = [
        helper.make_tensor_value_info(input_blob, TensorProto.FLOAT, [1, channels, "H", "W"])
    ]
    for name in injected:
        graph_inputs.append(
            helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, None, None, None])
        )

    for layer in layers:
        # Weights are read for every layer, in order, even for layers that
        # an injected blob makes dead: the file has no index to skip with.
        if layer.type == "Input":
            for blob in layer.outputs:
                graph.tensors[blob] = blob
            continue
        translate = _TRANSLATIONS.get(layer.type)
        if translate is None:
            raise UnsupportedLayerError(f"ncnn layer type {layer.type} ({layer.name})")
        if layer.type == "Split":
            for blob in layer.outputs:
                graph.tensors[blob] = blob if blob in injected else graph.source(layer.inputs[0])
            continue
        sources = [graph.source(blob) for blob in layer.inputs]
        produced = translate(graph, layer, reader, sources)
        (blob,) = layer.outputs
        graph.tensors[blob] = blob if blob in injected else produced
    if reader.remaining():
        raise NcnnFormatError(f"{weights.name} has {reader.remaining()} bytes no layer read")
    unknown = set(injected) - set(graph.tensors)
    if unknown:
        raise NcnnFormatError(f"cannot inject {sorted(unknown)}: no layer makes them")

    output_infos = []
    for blob in outputs:
        tensor = graph.source(blob)
        if tensor != blob:
            graph.node("Identity", [tensor], blob)
        output_infos.append(
            helper.make_tensor_value_info(blob, TensorProto.FLOAT, [1, None, None, None])
        )
    nodes = _live_nodes(graph.nodes, set(outputs), stop=set(injected) | {input_blob})
    used = {name for node in nodes for name in node.input}
    model = helper.make_model(
        helper.make_graph(
            nodes,
            param.stem,
            graph_inputs,
            output_infos,
            [init for init in graph.initializers if init.name in used],
        ),
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="upscayl-cloud",
    )
    model.ir_version = IR_VERSION
    return model


def _live_nodes(
    nodes: list[onnx.NodeProto], wanted: set[str], stop: set[str]
) -> list[onnx.NodeProto]:
    """The nodes ``wanted`` depends on, in order; tensors in ``stop`` are
    graph inputs, so what computes them is dead."""
    needed = set(wanted)
    live: list[onnx.NodeProto] = []
    for node in reversed(nodes):
        if any(out in needed and out not in stop for out in node.output):
            live.append(node)
            needed.update(node.input)
    return live[::-1]


# -- translations, one per ncnn layer type -----------------------------------


def _activation(graph: _Graph, layer: Layer, tensor: str) -> str:
    """ncnn fuses an activation into convolutions (params 9 and 10)."""
    kind = layer.int(9, 0)
    values = layer.array(10)
    if kind in (2, 3) and len(values) < kind - 1:
        raise NcnnFormatError(f"{layer.name}: activation {kind} without its parameters")
    if kind == 0:
        return tensor
    if kind == 1:
        return graph.node("Relu", [tensor])
    if kind == 2:
        return graph.node("LeakyRelu", [tensor], alpha=values[0])
    if kind == 3:
        low = graph.constant("min", np.array(values[0], np.float32))
        high = graph.constant("max", np.array(values[1], np.float32))
        return graph.node("Clip", [tensor, low, high])
    if kind == 4:
        return graph.node("Sigmoid", [tensor])
    raise UnsupportedLayerError(f"{layer.name}: fused activation type {kind}")


def _window(layer: Layer) -> tuple[list[int], list[int], list[int], list[int]]:
    """Kernel, dilation, stride and ONNX pads (top, left, bottom, right)."""
    kernel_w = layer.int(1, 0)
    dilation_w, stride_w = layer.int(2, 1), layer.int(3, 1)
    left = layer.int(4, 0)
    if left < 0:
        raise UnsupportedLayerError(f"{layer.name}: automatic ('same') padding")
    top = layer.int(14, left)
    right, bottom = layer.int(15, left), layer.int(16, top)
    return (
        [layer.int(11, kernel_w), kernel_w],
        [layer.int(12, dilation_w), dilation_w],
        [layer.int(13, stride_w), stride_w],
        [top, left, bottom, right],
    )


def _convolution(graph: _Graph, layer: Layer, reader: WeightReader, sources: list[str]) -> str:
    kernel, dilation, stride, pads = _window(layer)
    if layer.params.get(18, 0) != 0 or layer.int(8, 0) or layer.int(19, 0):
        raise UnsupportedLayerError(f"{layer.name}: pad value, int8 or dynamic weights")
    outputs, size = layer.int(0, 0), layer.int(6, 0)
    weight = reader.tagged(size).reshape(outputs, -1, *kernel)
    inputs = [sources[0], graph.constant(layer.name + "_w", weight)]
    if layer.int(5, 0):
        inputs.append(graph.constant(layer.name + "_b", reader.raw(outputs).copy()))
    conv = graph.node(
        "Conv", inputs, kernel_shape=kernel, dilations=dilation, strides=stride, pads=pads
    )
    return _activation(graph, layer, conv)


def _deconvolution(graph: _Graph, layer: Layer, reader: WeightReader, sources: list[str]) -> str:
    kernel, dilation, stride, pads = _window(layer)
    if layer.int(20, 0) or layer.int(21, 0) or layer.int(28, 0):
        raise UnsupportedLayerError(f"{layer.name}: fixed output size or dynamic weights")
    outputs, size = layer.int(0, 0), layer.int(6, 0)
    # ncnn stores (out, in, kh, kw); ONNX's ConvTranspose wants (in, out, kh, kw).
    weight = reader.tagged(size).reshape(outputs, -1, *kernel).transpose(1, 0, 2, 3)
    inputs = [sources[0], graph.constant(layer.name + "_w", np.ascontiguousarray(weight))]
    if layer.int(5, 0):
        inputs.append(graph.constant(layer.name + "_b", reader.raw(outputs).copy()))
    deconv = graph.node(
        "ConvTranspose",
        inputs,
        kernel_shape=kernel,
        dilations=dilation,
        strides=stride,
        pads=pads,
        output_padding=[layer.int(19, layer.int(18, 0)), layer.int(18, 0)],
    )
    return _activation(graph, layer, deconv)


def _inner_product(graph: _Graph, layer: Layer, reader: WeightReader, sources: list[str]) -> str:
    # On a 1-D blob (here 1 x c x 1 x 1) an inner product is a 1x1 convolution.
    outputs, size = layer.int(0, 0), layer.int(2, 0)
    if layer.int(8, 0):
        raise UnsupportedLayerError(f"{layer.name}: int8 inner product")
    weight = reader.tagged(size).reshape(outputs, -1, 1, 1)
    inputs = [sources[0], graph.constant(layer.name + "_w", weight)]
    if layer.int(1, 0):
        inputs.append(graph.constant(layer.name + "_b", reader.raw(outputs).copy()))
    return _activation(graph, layer, graph.node("Conv", inputs, kernel_shape=[1, 1]))


def _prelu(graph: _Graph, layer: Layer, reader: WeightReader, sources: list[str]) -> str:
    count = layer.int(0, 0)
    slope = reader.raw(count).copy()
    shape = (1,) if count == 1 else (count, 1, 1)
    return graph.node("PRelu", [sources[0], graph.constant(layer.name, slope.reshape(shape))])


def _memory_data(graph: _Graph, layer: Layer, reader: WeightReader, sources: list[str]) -> str:
    w, h, d, c = layer.int(0, 0), layer.int(1, 0), layer.int(11, 0), layer.int(2, 0)
    if d or not (w or h or c):
        raise UnsupportedLayerError(f"{layer.name}: 4-D or scalar constant")
    if c:
        shape = (1, c, max(h, 1), max(w, 1))
    elif h:
        raise UnsupportedLayerError(f"{layer.name}: 2-D constant")
    else:
        shape = (1, w, 1, 1)
    values = reader.raw(int(np.prod(shape))).reshape(shape).copy()
    return graph.constant(layer.name, values)


_BINARY = {0: "Add", 1: "Sub", 2: "Mul", 3: "Div", 4: "Max", 5: "Min", 6: "Pow"}
_REVERSED = {7: "Sub", 8: "Div", 9: "Pow"}


def _binary(graph: _Graph, layer: Layer, reader: WeightReader, sources: list[str]) -> str:
    kind = layer.int(0, 0)
    if layer.int(1, 0):
        operands = [sources[0], graph.constant("scalar", np.array(layer.float(2, 0.0), np.float32))]
    else:
        operands = list(sources)
    if kind in _BINARY:
        return graph.node(_BINARY[kind], operands)
    if kind in _REVERSED:
        return graph.node(_REVERSED[kind], operands[::-1])
    raise UnsupportedLayerError(f"{layer.name}: binary operation {kind}")


def _eltwise(graph: _Graph, layer: Layer, reader: WeightReader, sources: list[str]) -> str:
    kind, coeffs = layer.int(0, 0), layer.array(1)
    if kind == 1 and coeffs and any(c != 1.0 for c in coeffs):
        terms = [
            source if c == 1.0 else graph.node("Mul", [source, _scalar(graph, c)])
            for source, c in zip(sources, coeffs, strict=True)
        ]
    else:
        terms = sources
    op = {0: "Mul", 1: "Sum", 2: "Max"}.get(kind)
    if op is None:
        raise UnsupportedLayerError(f"{layer.name}: eltwise operation {kind}")
    return graph.node(op, terms)


def _scalar(graph: _Graph, value: float) -> str:
    return graph.constant("scalar", np.array(value, np.float32))


def _unary(op: str) -> Translate:
    def translate(graph: _Graph, layer: Layer, reader: WeightReader, sources: list[str]) -> str:
        return graph.node(op, sources)

    return translate


def _swish(graph: _Graph, layer: Layer, reader: WeightReader, sources: list[str]) -> str:
    return graph.node("Mul", [sources[0], graph.node("Sigmoid", sources)])


def _concat(graph: _Graph, layer: Layer, reader: WeightReader, sources: list[str]) -> str:
    return graph.node("Concat", sources, axis=_onnx_axis(layer.int(0, 0)))


def _onnx_axis(axis: int) -> int:
    """ncnn counts the axes of a ``c x h x w`` blob; ONNX has a batch first."""
    return axis + 1 if axis >= 0 else axis


def _pooling(graph: _Graph, layer: Layer, reader: WeightReader, sources: list[str]) -> str:
    if not layer.int(4, 0):
        raise UnsupportedLayerError(f"{layer.name}: windowed pooling")
    op = {0: "GlobalMaxPool", 1: "GlobalAveragePool"}.get(layer.int(0, 0))
    if op is None:
        raise UnsupportedLayerError(f"{layer.name}: pooling type {layer.int(0, 0)}")
    return graph.node(op, sources)


def _crop(graph: _Graph, layer: Layer, reader: WeightReader, sources: list[str]) -> str:
    starts, ends, axes = layer.array(9), layer.array(10), layer.array(11)
    if len(sources) != 1 or not axes:
        raise UnsupportedLayerError(f"{layer.name}: crop by offsets or by a reference blob")
    # ncnn: a start of -233 is 0, an end of -233 (or 0) is "to the end".
    onnx_starts = [0 if int(v) == -233 else int(v) for v in starts]
    onnx_ends = [_INT64_MAX if int(e) in (0, -233) else int(e) for e in ends]
    return graph.node(
        "Slice",
        [
            sources[0],
            graph.constant("starts", np.array(onnx_starts, np.int64)),
            graph.constant("ends", np.array(onnx_ends, np.int64)),
            graph.constant("axes", np.array([_onnx_axis(int(a)) for a in axes], np.int64)),
        ],
    )


def _interp(graph: _Graph, layer: Layer, reader: WeightReader, sources: list[str]) -> str:
    kind = layer.int(0, 0)
    if layer.int(3, 0) or layer.int(4, 0) or layer.int(5, 0):
        raise UnsupportedLayerError(f"{layer.name}: interpolation to a fixed or dynamic size")
    scales = np.array([1.0, 1.0, layer.float(1, 1.0), layer.float(2, 1.0)], np.float32)
    align = layer.int(6, 0)
    if kind == 1:
        # ncnn: source index = floor(x * in / out).
        attrs = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric"}
        attrs["nearest_mode"] = "floor"
    elif kind in (2, 3):
        attrs = {
            "mode": "linear" if kind == 2 else "cubic",
            "coordinate_transformation_mode": "align_corners" if align else "half_pixel",
        }
        if kind == 3:
            attrs["cubic_coeff_a"] = -0.75
    else:
        raise UnsupportedLayerError(f"{layer.name}: interpolation type {kind}")
    return graph.node("Resize", [sources[0], "", graph.constant("scales", scales)], **attrs)


def _pixel_shuffle(graph: _Graph, layer: Layer, reader: WeightReader, sources: list[str]) -> str:
    if layer.int(1, 0):
        raise UnsupportedLayerError(f"{layer.name}: pixel shuffle mode {layer.int(1, 0)}")
    return graph.node("DepthToSpace", sources, blocksize=layer.int(0, 1), mode="CRD")


_TRANSLATIONS: dict[str, Translate] = {
    "Convolution": _convolution,
    "Deconvolution": _deconvolution,
    "InnerProduct": _inner_product,
    "PReLU": _prelu,
    "MemoryData": _memory_data,
    "BinaryOp": _binary,
    "Eltwise": _eltwise,
    "Sigmoid": _unary("Sigmoid"),
    "Swish": _swish,
    "Concat": _concat,
    "Pooling": _pooling,
    "Crop": _crop,
    "Interp": _interp,
    "PixelShuffle": _pixel_shuffle,
    "Split": _unary("Identity"),  # handled inline: outputs alias the input
}
