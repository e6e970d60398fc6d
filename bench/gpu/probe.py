"""Facts to read before bench/gpu_check.py's numbers, in a few seconds.

Which onnxruntime Python imported (the carried onnxruntime-gpu must shadow
the machine's CPU-only one), whether ``preload_dlls`` found the CUDA and
cuDNN libraries, whether a session asked for CUDA really runs on CUDA (and
matches the CPU), what the engine's provider order (TensorRT first) ends up
with where TensorRT's libraries are missing, and what ncnn's Vulkan sees.

    PYTHONPATH=src:/tmp/site:.gpu-site python3 bench/gpu/probe.py --out probe.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
import traceback
from pathlib import Path

import numpy as np

CUDA_ORDER = ["CUDAExecutionProvider", "CPUExecutionProvider"]
ENGINE_ORDER = ["TensorrtExecutionProvider", *CUDA_ORDER]


def tiny_model() -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3), dtype=np.float32), "w")
    bias = numpy_helper.from_array(rng.standard_normal(8, dtype=np.float32), "b")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["y"]),
        ],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 64, 64])],
        [weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # as engine/convert/to_onnx.py writes them
    onnx.checker.check_model(model)
    return model.SerializeToString()


def session_row(ort, model: bytes, providers: list[str], x, ref) -> dict:
    row: dict = {"asked": providers}
    printed = io.StringIO()
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(printed):  # onnxruntime prints its EP fallback
            session = ort.InferenceSession(model, providers=providers)
        row["session_providers"] = session.get_providers()
        out = session.run(None, {"x": x})[0]
        row["max_abs_diff_vs_cpu"] = float(np.abs(out - ref).max())
    except Exception as exc:
        row["error"] = f"{type(exc).__name__}: {exc}"
    row["seconds"] = round(time.perf_counter() - start, 3)
    row["printed"] = printed.getvalue()[-1500:]
    return row


def onnxruntime_facts() -> dict:
    import onnxruntime as ort

    facts: dict = {"file": ort.__file__, "version": ort.__version__}
    try:
        from onnxruntime.capi import build_and_package_info as info

        facts["package"] = getattr(info, "package_name", None)
        facts["cuda_version"] = getattr(info, "cuda_version", None)
    except ImportError:
        facts["package"] = None
    facts["available_providers"] = ort.get_available_providers()
    facts["get_device"] = ort.get_device()
    if hasattr(ort, "preload_dlls"):
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            ort.preload_dlls()
        facts["preload_dlls_printed"] = printed.getvalue()  # empty: every library loaded
    model = tiny_model()
    x = np.random.default_rng(1).random((1, 3, 64, 64), dtype=np.float32)
    ref = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    facts["cuda"] = session_row(ort, model, CUDA_ORDER, x, ref)
    facts["engine_order"] = session_row(ort, model, ENGINE_ORDER, x, ref)
    return facts


def ncnn_facts() -> dict:
    import ncnn

    facts: dict = {"file": ncnn.__file__, "version": getattr(ncnn, "__version__", None)}
    facts["gpu_count"] = count = ncnn.get_gpu_count()
    if count:
        info = ncnn.get_gpu_info(0)
        for name in (
            "device_name",
            "api_version",
            "driver_version",
            "support_fp16_storage",
            "support_fp16_arithmetic",
            "support_cooperative_matrix",
        ):
            method = getattr(info, name, None)
            if callable(method):
                value = method()
                facts[name] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return facts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    report: dict = {}
    for name, probe in (("onnxruntime", onnxruntime_facts), ("ncnn", ncnn_facts)):
        try:
            report[name] = probe()
        except Exception:
            report[name] = {"error": traceback.format_exc()}
    text = json.dumps(report, indent=2)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
