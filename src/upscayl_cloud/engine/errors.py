"""Typed engine errors.

Each error carries a stable ``code`` and a ``public_message`` that is safe to
show to the person who sent the image, so the service can map it to a 4xx
without parsing strings. Anything that is *not* an ``EngineError`` is a bug
of ours (or of a library) and must surface as a 5xx, never as a client error.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base of every error the engine raises on purpose."""

    code = "ENGINE_ERROR"
    #: True when the caller's input is at fault (maps to 4xx); False for
    #: server-side conditions such as a missing weight file.
    client_error = True

    def __init__(self, public_message: str) -> None:
        super().__init__(public_message)
        self.public_message = public_message


class InvalidImageError(EngineError):
    """The bytes are not a readable image: empty, truncated, corrupt, or not
    the type that was declared."""

    code = "INVALID_IMAGE"


class UnsupportedImageTypeError(EngineError):
    """A readable file of a kind we do not accept (only JPEG, PNG, WebP)."""

    code = "INVALID_FILE_TYPE"


class ImageTooLargeError(EngineError):
    """Input or output would exceed a configured pixel or format limit.

    Raised from the header alone, before any pixel is decoded, so that a
    decompression bomb costs nothing."""

    code = "IMAGE_TOO_LARGE"


class UnknownModelError(EngineError):
    """The model name is not in the catalog."""

    code = "UNKNOWN_MODEL"


class InvalidOptionError(EngineError):
    """An option (scale, format, quality) outside what the engine supports."""

    code = "INVALID_OPTION"


class WeightsMissingError(EngineError):
    """A network's weight file is not installed: a deployment fault."""

    code = "WEIGHTS_MISSING"
    client_error = False


class CancelledError(EngineError):
    """The caller asked to stop (checked between tiles and steps)."""

    code = "CANCELLED"
    client_error = False
