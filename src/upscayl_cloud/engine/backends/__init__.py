"""Runtimes that execute a network: one file per runtime.

* ``ncnn``: Upscayl's own engine, on the CPU or a Vulkan GPU; reads the
  weight files as shipped.
* ``openvino``: Intel's runtime on the CPU, in bf16 where the CPU has AMX or
  AVX-512-BF16 (several times ncnn's speed there), from the ONNX graph that
  ``engine.convert`` builds out of the same ncnn files.
* ``onnxruntime``: ONNX Runtime with TensorRT or CUDA on an NVIDIA GPU.

``select`` decides which one ``auto`` means on this machine, and why.
"""

import sys

# OpenVINO's conversion tools, run on ``import openvino``, send a usage event
# to Google Analytics unless the user has opted out in a file under their
# home folder (and print a warning where that folder is not writable). A
# service sends nothing anywhere: ``None`` in ``sys.modules`` makes their
# ``import openvino_telemetry`` fail, and they fall back to their own stub.
# Here, because every module of this package that imports openvino is
# imported after this file.
sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]
