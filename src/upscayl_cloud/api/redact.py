"""Keeps secrets out of the logs: signed links' signatures are cut from access logs.

A signed URL is a bearer credential until it expires; the access log would
otherwise hold every one in full. API keys travel in a header, which the
access log never prints.
"""

from __future__ import annotations

import logging
import re

_SIGNATURE = re.compile(r"(signature=)[^&\s]+", re.IGNORECASE)


def redact(text: str) -> str:
    return _SIGNATURE.sub(r"\1[redacted]", text)


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
