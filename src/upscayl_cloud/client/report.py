"""What ``upscale()`` tells its caller: one result per input file, and progress hooks.

Kept apart from the run itself so that the CLI and other callers depend on
these small types only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass
class FileResult:
    """What happened to one input: ``done``, ``failed`` or ``skipped``.

    ``reason`` says why a file failed or was skipped; on a ``done`` file it
    says why its thumbnail, asked for, was not saved (the result was)."""

    source: Path
    status: str
    reason: str | None = None
    output: Path | None = None
    thumbnail: Path | None = None
    task_id: str | None = None


@dataclass
class UpscaleReport:
    results: list[FileResult] = field(default_factory=list)
    #: What the run told along the way that is no file's result (a task that
    #: shows no progress for long: no worker may be running), in order.
    notices: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[FileResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed


class Reporter(Protocol):
    """Progress hooks (the CLI draws rich bars with them); all optional to act on.

    A reporter may also have ``notice(message: str)``, told what
    :attr:`UpscaleReport.notices` records as it happens (the CLI prints it on
    stderr); it is looked up, not required, so reporters written before it
    still work."""

    def uploading(self, total_bytes: int) -> None: ...
    def uploaded(self, delta: int) -> None: ...
    def processing(self, task_id: str, files: int, percent: float) -> None: ...
    def finished(self, result: FileResult) -> None: ...


class Quiet:
    """The hooks of a caller that wants none."""

    def uploading(self, total_bytes: int) -> None: ...
    def uploaded(self, delta: int) -> None: ...
    def processing(self, task_id: str, files: int, percent: float) -> None: ...
    def finished(self, result: FileResult) -> None: ...
    def notice(self, message: str) -> None: ...


def finish(report: UpscaleReport, hooks: Reporter, result: FileResult) -> None:
    """Record a file's outcome and tell the hooks at once (the CLI prints failures
    as they happen)."""
    report.results.append(result)
    hooks.finished(result)


def notice(report: UpscaleReport, hooks: Reporter, message: str) -> None:
    """Record a notice and tell it to the hooks' ``notice``, if they have one."""
    report.notices.append(message)
    told = getattr(hooks, "notice", None)
    if callable(told):
        told(message)
