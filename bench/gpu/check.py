"""bench/gpu_check.py, unchanged, with ONNX Runtime on its CUDA provider.

The lent machines have no TensorRT libraries; the engine's provider probe
(``backends.onnxruntime.gpu_provider``) would find that out, at the cost of
a failed TensorRT session. This wrapper pins the engine's GPU provider order
(``KIT_ORT_PROVIDERS``, default ``CUDAExecutionProvider``; ``engine`` keeps
the engine's own), calls ``onnxruntime.preload_dlls()``, runs gpu_check's
``main`` with the same arguments, and adds to its JSON a ``kit`` entry:
which onnxruntime ran and which providers each session really got.

    PYTHONPATH=src:/tmp/site:.gpu-site python3 bench/gpu/check.py --out gpu.json [gpu_check args]
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import sys
from pathlib import Path

import onnxruntime as ort

from upscayl_cloud.engine import runner
from upscayl_cloud.engine.backends import onnxruntime as engine_ort

GPU_CHECK = Path(__file__).resolve().parents[1] / "gpu_check.py"


def main() -> None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--out", type=Path, required=True)
    out = parser.parse_known_args()[0].out
    pinned = os.environ.get("KIT_ORT_PROVIDERS", "CUDAExecutionProvider")
    if pinned != "engine":
        engine_ort.GPU_PROVIDERS = tuple(pinned.split(","))
    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()  # prints what it could not load; LD_LIBRARY_PATH does the rest
    sys.argv = [str(GPU_CHECK), *sys.argv[1:]]
    runpy.run_path(str(GPU_CHECK), run_name="__main__")

    sessions: dict[str, dict[str, list[str]]] = {}
    for network in list(runner._loaded.values()):
        if isinstance(network, engine_ort.OnnxRuntimeNetwork):
            for (output, injected), session in network._sessions.items():
                name = "+".join((output, *injected))
                sessions.setdefault(network.spec.key, {})[name] = session.get_providers()
    report = json.loads(out.read_text())
    report["kit"] = {
        "onnxruntime": ort.__version__,
        "onnxruntime_file": ort.__file__,
        "engine_gpu_providers": list(engine_ort.GPU_PROVIDERS),
        "onnxruntime_session_providers": sessions,
    }
    out.write_text(json.dumps(report, indent=2))
    print("kit:", json.dumps(report["kit"]), flush=True)


if __name__ == "__main__":
    main()
