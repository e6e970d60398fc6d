"""What the service's log handlers make of secrets and control characters."""

from __future__ import annotations

import io
import logging

from upscayl_cloud.api.redact import EscapeControls, redact


def test_signatures_are_cut_however_their_name_is_written() -> None:
    assert redact("/objects/a.png?method=GET&signature=f00d&expires=1") == (
        "/objects/a.png?method=GET&signature=[redacted]&expires=1"
    )
    assert redact("?SIG%6Eature=f00d") == "?SIG%6Eature=[redacted]"
    assert redact("https://s3/b/k?X-Amz-Signature=f00d&X-Amz-Date=1") == (
        "https://s3/b/k?X-Amz-Signature=[redacted]&X-Amz-Date=1"
    )
    assert redact("?design=1&length=5") == "?design=1&length=5"


def test_a_message_cannot_start_a_log_line_of_its_own() -> None:
    """The 408 warning logged the request's path as uvicorn decoded it:
    ``%0A`` in a path wrote a second, forged line."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(EscapeControls())
    logger = logging.getLogger("test_redact.one_line")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("408 for %s", "/x\n2099-01-01 CRITICAL admin key leaked\x1b[2J")
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed on %s: %s (%d)", "/y\r\nforged", OSError("a\nb"), 7)
        logger.error("a message of its own\non two lines")  # as uvicorn logs a traceback
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert lines[0] == r"WARNING 408 for /x\n2099-01-01 CRITICAL admin key leaked\x1b[2J"
    assert lines[1] == r"ERROR failed on /y\r\nforged: a\nb (7)"
    assert lines[2] == "Traceback (most recent call last):"  # the traceback keeps its lines
    assert lines[-3] == "ValueError: boom"
    assert lines[-2:] == ["ERROR a message of its own", "on two lines"]
