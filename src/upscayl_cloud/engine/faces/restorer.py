"""Face-restoration networks in the common ONNX contract, run by onnxruntime.

The contract is the one GFPGAN, CodeFormer, GPEN-BFR and RestoreFormer++
exports share: one ``1 x 3 x 512 x 512`` float input, RGB in [-1, 1], and the
restored face in the same form as the first output. CodeFormer adds a
fidelity weight as a second, scalar input; any such one-element input gets
``fidelity``. Exports whose batch or spatial axes are symbolic are accepted
as long as a real run at 1x3x512x512 gives 1x3x512x512.

Every check runs on the real model with a probe image, so ``models add``
refuses a file that would only fail later inside a task.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import onnxruntime as ort

from upscayl_cloud.engine.faces.align import SIZE
from upscayl_cloud.engine.faces.errors import FaceModelError
from upscayl_cloud.engine.faces.settings import DEFAULT_FIDELITY

_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}
#: Outputs a little past [-1, 1] are normal (GFPGAN overshoots and clamps);
#: anything beyond this is another contract (0..255, say).
MAX_ABS_OUTPUT = 1.5


@dataclass(frozen=True)
class Signature:
    """Where the image goes in and comes out, found by :func:`inspect`."""

    image_input: str
    dtype: type[np.generic]
    scalar_inputs: tuple[tuple[str, type[np.generic]], ...]
    output: str


def providers(use_gpu: bool) -> list[str]:
    """CUDA first when this onnxruntime build has it (``onnxruntime-gpu``)."""
    available = ort.get_available_providers()
    chosen = ["CUDAExecutionProvider"] if use_gpu and "CUDAExecutionProvider" in available else []
    return [*chosen, "CPUExecutionProvider"]


def open_session(
    path: Path, use_gpu: bool = False, threads: int = 0, label: str | None = None
) -> ort.InferenceSession:
    """``label`` names the file in errors (default: its name): ``models add``
    loads a temporary copy, and the operator knows the file they gave."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=providers(use_gpu))
    except Exception as exc:  # onnxruntime raises its own, undocumented types
        raise FaceModelError(f"{label or path.name} is not a loadable ONNX model: {exc}") from exc


def inspect(session: ort.InferenceSession) -> Signature:
    """Check the declared inputs and outputs against the contract."""
    image, scalars = None, []
    for arg in session.get_inputs():
        dtype = _DTYPES.get(arg.type)
        if dtype is None:
            raise FaceModelError(f"input {arg.name!r} is {arg.type}, not a float tensor")
        if len(arg.shape) == 4:
            if image is not None:
                raise FaceModelError("the model has more than one image input")
            _check_shape(f"input {arg.name!r}", arg.shape)
            image = (arg.name, dtype)
        elif _one_element(arg.shape):
            scalars.append((arg.name, dtype))
        else:
            raise FaceModelError(
                f"input {arg.name!r} has shape {arg.shape}: expected 1x3x512x512"
                " (plus, at most, scalar inputs such as CodeFormer's fidelity weight)"
            )
    if image is None:
        raise FaceModelError("the model has no 1x3x512x512 image input")
    first = session.get_outputs()[0]
    if first.type not in _DTYPES:
        raise FaceModelError(f"output {first.name!r} is {first.type}, not a float tensor")
    _check_shape(f"output {first.name!r}", first.shape)
    return Signature(image[0], image[1], tuple(scalars), first.name)


def _check_shape(what: str, shape: list[int | str | None]) -> None:
    if len(shape) != 4:
        raise FaceModelError(f"{what} has shape {shape}: expected 1x3x512x512")
    for got, want in zip(shape, (1, 3, SIZE, SIZE), strict=True):
        if isinstance(got, int) and got != want:
            raise FaceModelError(
                f"{what} has shape {shape}: expected 1x3x512x512 (RGB faces of 512x512)"
            )


def _one_element(shape: list[int | str | None]) -> bool:
    return all(isinstance(d, int) and d == 1 for d in shape)


class Restorer:
    """One loaded model: 512x512 RGB float faces in 0..1 in, restored out."""

    def __init__(self, session: ort.InferenceSession, fidelity: float = DEFAULT_FIDELITY) -> None:
        self.session = session
        self.signature = inspect(session)
        self.fidelity = fidelity

    def restore(self, face: np.ndarray) -> np.ndarray:
        """``512 x 512 x 3`` float RGB in 0..1 -> the same, restored."""
        return (np.clip(self.run_raw(face * 2.0 - 1.0), -1.0, 1.0) + 1.0) * 0.5

    def run_raw(self, face: np.ndarray) -> np.ndarray:
        """Run on a face already in [-1, 1]; returns the raw output, HWC float32."""
        sig = self.signature
        feeds = {sig.image_input: face.transpose(2, 0, 1)[None].astype(sig.dtype)}
        for name, dtype in sig.scalar_inputs:
            arg = next(a for a in self.session.get_inputs() if a.name == name)
            feeds[name] = np.full([1] * len(arg.shape), self.fidelity, dtype=dtype)
        out = self.session.run([sig.output], feeds)[0]
        if out.shape != (1, 3, SIZE, SIZE):
            raise FaceModelError(f"the model returned shape {out.shape}, not 1x3x512x512")
        return np.asarray(out[0], np.float32).transpose(1, 2, 0)


@lru_cache(maxsize=4)
def _cached(
    path: Path, mtime_ns: int, size: int, use_gpu: bool, threads: int, fidelity: float
) -> Restorer:
    return Restorer(open_session(path, use_gpu, threads), fidelity)


def load(
    path: Path, use_gpu: bool = True, threads: int = 0, fidelity: float = DEFAULT_FIDELITY
) -> Restorer:
    """A restorer for ``path``, loaded once per process (and again if the
    file is replaced): sessions of real models take seconds to build."""
    stat = Path(path).stat()
    return _cached(Path(path), stat.st_mtime_ns, stat.st_size, use_gpu, threads, fidelity)


def probe_image() -> np.ndarray:
    """A 512x512 test face in [-1, 1]: a ramp from black to white across,
    with a black and a white square, so a model's output range shows."""
    ramp = np.linspace(-1.0, 1.0, SIZE, dtype=np.float32)
    image = np.repeat(np.tile(ramp, (SIZE, 1))[..., None], 3, axis=2)
    image[64:192, 64:192] = -1.0
    image[320:448, 320:448] = 1.0
    return image


def validate(path: Path, label: str | None = None) -> Signature:
    """Load ``path`` on the CPU, check the contract and run it once.

    Raises FaceModelError naming what is wrong: not ONNX, wrong inputs or
    outputs, an output of the wrong size, non-finite values, or values
    outside [-1, 1] (such as 0..255 or 0..1 models). ``label`` names the
    file in them."""
    restorer = Restorer(open_session(Path(path), use_gpu=False, label=label))
    try:
        out = restorer.run_raw(probe_image())
    except FaceModelError:
        raise
    except Exception as exc:
        raise FaceModelError(f"running the model on a 1x3x512x512 probe failed: {exc}") from exc
    if not np.isfinite(out).all():
        raise FaceModelError("the model's output holds NaN or infinite values")
    low, high = float(out.min()), float(out.max())
    if max(abs(low), abs(high)) > MAX_ABS_OUTPUT:
        raise FaceModelError(
            f"the model's output spans {low:.3g}..{high:.3g}: expected RGB in [-1, 1]"
        )
    if low >= 0.0:
        raise FaceModelError(
            f"the model's output spans {low:.3g}..{high:.3g} on a probe with black areas:"
            " it looks like a 0..1 model, expected RGB in [-1, 1]"
        )
    return restorer.signature
