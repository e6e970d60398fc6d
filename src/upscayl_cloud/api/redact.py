"""Keeps secrets and forgeries out of the logs: signed links' signatures are
cut from access logs, and what clients chose is kept on its log line.

A signed URL is a bearer credential until it expires; the access log would
otherwise hold every one in full. API keys travel in a header, which the
access log never prints. A path or name a client chose may hold a
newline (``%0A`` decoded), which would otherwise start a log line of the
client's making.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote

#: A query parameter: its name as sent (maybe percent-encoded) and its value.
_PARAMETER = re.compile(r"([^?&;=\s]+)=([^&;\s]+)")

#: Control characters (C0, DEL, C1, line and paragraph separators) that
#: would start a new line in a log, or restyle a terminal showing it.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _redact_parameter(match: re.Match[str]) -> str:
    # Starlette decodes the names it reads, so ``sig%6Eature=`` signs a
    # request as well as ``signature=`` does; S3's is ``X-Amz-Signature``.
    if unquote(match[1]).lower().endswith("signature"):
        return f"{match[1]}=[redacted]"
    return match[0]


def redact(text: str) -> str:
    return _PARAMETER.sub(_redact_parameter, text)


def escape_controls(text: str) -> str:
    """``text`` on one line: each control character as its Python escape
    (``\\n``, ``\\x1b``), so a client-chosen path or name cannot forge a
    log line of its own."""
    return _CONTROL.sub(lambda m: repr(m[0])[1:-1], text)


class EscapeControls(logging.Filter):
    """Puts what a record's arguments say on one line (see escape_controls).

    Client-chosen text (a path, a file name, an error about either) reaches
    a log line as an argument of a fixed message, so the arguments are what
    is escaped; the fixed text itself may span lines, as uvicorn's logged
    tracebacks do."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_one_line(a) for a in record.args)
        return True


def _one_line(value: object) -> object:
    if isinstance(value, int | float) or value is None:
        return value  # keeps %d and %.1f working
    text = str(value)
    return escape_controls(text) if _CONTROL.search(text) else value


class RedactSignatures(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def install() -> None:
    """Attach the filter to uvicorn's access logger (idempotent)."""
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactSignatures) for f in logger.filters):
        logger.addFilter(RedactSignatures())
