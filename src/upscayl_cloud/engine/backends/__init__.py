"""Runtimes that execute a network: one file per runtime.

* ``ncnn``: Upscayl's own engine, on the CPU or a Vulkan GPU; reads the
  weight files as shipped.
* ``openvino``: Intel's runtime on the CPU, in bf16 where the CPU has AMX or
  AVX-512-BF16 (several times ncnn's speed there), from the ONNX graph that
  ``engine.convert`` builds out of the same ncnn files.
* ``onnxruntime``: ONNX Runtime with TensorRT or CUDA on an NVIDIA GPU.

``select`` decides which one ``auto`` means on this machine, and why.
"""
