"""Errors of face enhancement, in the engine's typed family.

A request for faces on a server without a restoration model is the client's
to fix (drop ``enhanceFace``), so it maps to 400 with its own code and is
never silently ignored; a broken model file is the operator's fault (5xx).
"""

from __future__ import annotations

from upscayl_cloud.engine.errors import EngineError

UNAVAILABLE_MESSAGE = (
    "no face-restoration model is installed on this server; "
    "an operator can add one with `upscayl-cloud models add`"
)


def named_model_missing_message(name: str) -> str:
    """The server is set to a face model (``UPSCAYL_FACE_MODEL``) it does not hold."""
    return (
        f"this server's face-restoration model {name!r} is not installed; "
        f"an operator can add it with `upscayl-cloud models add PATH --name {name}`"
    )


def unusable_model_message(name: str, why: str) -> str:
    """The model is installed but its file cannot serve: cut short, emptied,
    not readable by the service, or not a model that loads. The client can
    only drop ``enhanceFace``; the operator has to install it again."""
    return (
        f"this server's face-restoration model {name!r} cannot be used ({why}); "
        f"an operator can install it again with "
        f"`upscayl-cloud models add PATH --name {name} --replace`"
    )


def unreadable_folder_message(why: str) -> str:
    """The folder of face models cannot be listed by this process (made
    0700 by a hardened umask, say)."""
    return (
        f"this server's face-model folder cannot be read ({why}); an operator can "
        "make it readable to the service (chmod 755)"
    )


class FaceEnhancementUnavailableError(EngineError):
    """Face enhancement was asked for, but no usable restoration model is
    installed."""

    code = "FACE_ENHANCEMENT_UNAVAILABLE"

    def __init__(self, public_message: str = UNAVAILABLE_MESSAGE) -> None:
        super().__init__(public_message)


class FaceModelError(EngineError):
    """A face-restoration model file does not honour the contract (1x3x512x512
    float RGB in [-1, 1], same out), or cannot be loaded at all."""

    code = "INVALID_FACE_MODEL"
    client_error = False
