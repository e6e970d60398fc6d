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

    @property
    def failed(self) -> list[FileResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed


class Reporter(Protocol):
    """Progress hooks (the CLI draws rich bars with them); all optional to act on."""

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


def finish(report: UpscaleReport, hooks: Reporter, result: FileResult) -> None:
    """Record a file's outcome and tell the hooks at once (the CLI prints failures
    as they happen)."""
    report.results.append(result)
    hooks.finished(result)
