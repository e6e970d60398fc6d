"""How face enhancement runs.

Only ``use_gpu`` and ``threads`` follow the operator's settings
(``UPSCAYL_ENGINE_USE_GPU``, and ``UPSCAYL_ENGINE_THREADS`` shared between
``UPSCAYL_WORKERS``, set by ``worker.configured_engine``). The other fields
are the engine's fixed choices, not settings: fields so that tests and
library callers can vary them.

Kept free of heavy imports (no OpenCV, no onnxruntime), so that
``EngineSettings`` can hold a ``FaceSettings`` without every importer of the
engine's options paying for the libraries that only the work itself needs.
"""

from __future__ import annotations

from dataclasses import dataclass

#: CodeFormer's default balance between quality (0) and fidelity (1).
DEFAULT_FIDELITY = 0.5
#: Largest band of the output held as floats at once while cutting and
#: pasting a face: 1 MP, about 12 MB per float32 RGB copy (a band takes a
#: handful of copies while it is blended).
BAND_PIXELS = 1_000_000


@dataclass(frozen=True)
class FaceSettings:
    """How faces are found, restored and blended."""

    #: Longest edge of the copy of the source that detection looks at. Faces
    #: narrower than ``min_face_px`` on that copy are not found: raise it to
    #: catch small faces in large group photos, at about quadratic cost
    #: (1280: ~0.6 s on one core).
    detect_max_edge: int = 1280
    #: Smallest face edge looked for, in pixels of the detection copy.
    min_face_px: int = 24
    #: At most this many faces per image, the most confident first.
    max_faces: int = 32
    #: Match the restored face's colour to the upscale's (CIELAB mean/spread).
    colour_match: bool = True
    #: CodeFormer-style models: 0 favours quality, 1 fidelity to the input.
    fidelity: float = DEFAULT_FIDELITY
    #: Run the restorer on CUDA when onnxruntime has it (``onnxruntime-gpu``).
    use_gpu: bool = True
    #: onnxruntime threads for the restorer; 0 lets onnxruntime use every
    #: core (the service passes each worker's share). Detection runs its
    #: small networks on one thread (more did not help: they are too small
    #: to split).
    threads: int = 0
    #: Cap on the band of output rows held as floats at once.
    band_pixels: int = BAND_PIXELS
