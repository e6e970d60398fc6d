"""Which input widths a runtime runs slowly, measured on this machine.

OpenVINO's bf16 convolutions (oneDNN's AMX kernels) run some input widths of
the compact padded networks 1.5-5x slower per pixel than the widths beside
them: about one width in five of AnimeVideo v3 and SPAN, odd and even alike,
the same at every height, and no rule (odd, prime, multiple of 8) tells
which (bench/README.md, "Width cliffs"). The tile planner can step around
them cheaply, by taking a few more columns of context or by cutting an image
one tile wide in two, so it asks here how a width compares with its
neighbours.

A width is timed against its neighbours in one go, a single short call each
(the two beside it; where it looks slow, again with two more on each side),
and never against a number remembered from earlier: on a shared machine the
whole CPU's speed moves 2x within seconds (seen here while measuring), which
makes a remembered baseline meaningless, while widths timed back to back
share the moment. The ratio is kept for the life of the process and, given
a file, on disk (ratios depend on the CPU, the runtime, the precision and the
thread count, which the caller puts in the file's name), so a width costs
its probes once per machine: a restarted worker, or several sharing a
cache folder, do not time it again, and running ones take in, within
:data:`RELOAD_S`, what the others (or ``upscayl-cloud models tune``) timed.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

#: Widths timed on each side of one that looks slow: the lower median of
#: four stands for them, so two slow ones among them (slow widths come in
#: pairs, and every few pixels) do not hide a third. An ordinary-looking
#: width is settled by its two nearest, the faster of them standing for
#: both: a slow one beside it cannot make it look slow.
NEIGHBOURS = 2

#: Narrower sources are never tuned: their calls are too short to time.
MIN_WIDTH = 16

#: A width that looks at least this much slower than its neighbours is
#: timed again, with them, before the answer is kept: one call that met a
#: burst of other work must not mark an ordinary width slow for good.
CONFIRM_ABOVE = 1.2

#: A timing this recent is reused for a neighbouring width's window: the
#: planner asks about consecutive widths, whose windows overlap.
FRESH_S = 1.0

#: How often a process looks in the file for widths timed elsewhere (another
#: worker, ``upscayl-cloud models tune``): one ``stat`` at most this often,
#: and a read only when the file changed.
RELOAD_S = 10.0

#: Seconds per pixel of one call at a width: a backend's probe.
TimePerPixel = Callable[[int], float]


class WidthCosts:
    """Relative cost per pixel by source width, measured once per width."""

    def __init__(self, time_per_pixel: TimePerPixel, path: Path | None = None) -> None:
        self._time_per_pixel = time_per_pixel
        self._path = path
        self._lock = threading.Lock()
        self._relative: dict[int, float] = {}
        #: (inode, mtime) of the file when last read: every write replaces it.
        self._file_version: tuple[int, int] | None = None
        self._file_checked = -math.inf
        self._merge_file()
        #: width -> (when, seconds per pixel): recent timings, for reuse.
        self._recent: dict[int, tuple[float, float]] = {}

    def relative(self, width: int) -> float:
        """Seconds per pixel at ``width`` over its neighbours' (about 1 for
        an ordinary width, 3 for one three times as slow)."""
        if width < MIN_WIDTH + NEIGHBOURS:
            return 1.0
        with self._lock:
            self._merge_file()
            known = self._relative.get(width)
        if known is not None:
            return known
        try:
            ratio = self._measure(width)
        except Exception as exc:  # a probe that fails must not fail the image
            log.warning("could not time width %d: %s", width, exc)
            return 1.0
        with self._lock:
            # The first answer stands: the planner may ask twice for one
            # image (progress, then tiles) and must get one plan.
            answer = self._relative.setdefault(width, ratio)
            known = dict(self._relative)
        if self._path is not None:
            _save(self._path, known)
        return answer

    def known(self, width: int) -> float:
        """The ratio if ``width`` was timed already (here, or by another
        process into the file), else 1: never times anything."""
        with self._lock:
            self._merge_file()
            return self._relative.get(width, 1.0)

    def _merge_file(self) -> None:
        """Take in widths the file gained since it was last read, at most
        every :data:`RELOAD_S` (the caller holds the lock, or is ``__init__``).
        A width this process knows keeps its ratio: one plan per image."""
        now = time.monotonic()
        if self._path is None or now - self._file_checked < RELOAD_S:
            return
        self._file_checked = now
        try:
            stat = self._path.stat()
        except OSError:
            return
        version = (stat.st_ino, stat.st_mtime_ns)
        if version != self._file_version:
            self._file_version = version
            for width, ratio in _load(self._path).items():
                self._relative.setdefault(width, ratio)

    def _measure(self, width: int) -> float:
        nearest = {w: self._timed(w) for w in range(width - 1, width + 2)}
        ratio = _ratio(width, nearest)
        if ratio < CONFIRM_ABOVE:
            return ratio  # four widths in five end here, after three calls
        # The faster of two timings per width: bursts only slow calls.
        window = range(width - NEIGHBOURS, width + NEIGHBOURS + 1)
        again = {w: self._timed(w, fresh=True) for w in window}
        return _ratio(width, {w: min(nearest.get(w, math.inf), again[w]) for w in window})

    def _timed(self, width: int, fresh: bool = False) -> float:
        now = time.monotonic()
        with self._lock:
            recent = self._recent.get(width)
            if not fresh and recent is not None and now - recent[0] < FRESH_S:
                return recent[1]
        seconds = self._time_per_pixel(width)
        with self._lock:
            self._recent = {w: r for w, r in self._recent.items() if now - r[0] < FRESH_S}
            self._recent[width] = (time.monotonic(), seconds)
        return seconds

    @property
    def measured(self) -> dict[int, float]:
        with self._lock:
            return dict(self._relative)


def _ratio(width: int, per_pixel: dict[int, float]) -> float:
    """The width's time over its neighbours' lower median; 1 (ordinary)
    where a timing means nothing (zero, infinite, not a number)."""
    beside = statistics.median_low(t for w, t in per_pixel.items() if w != width)
    mine = per_pixel[width]
    if not (mine > 0 and beside > 0 and math.isfinite(mine) and math.isfinite(beside)):
        return 1.0
    return mine / beside


def _load(path: Path) -> dict[int, float]:
    """The ratios a file holds; none if it is missing or unreadable (a
    width is then timed again, which is all a lost file costs)."""
    try:
        return {int(width): float(ratio) for width, ratio in json.loads(path.read_text()).items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        log.warning("ignoring unreadable width timings %s: %s", path, exc)
        return {}


def _save(path: Path, ratios: dict[int, float]) -> None:
    """Merge ``ratios`` into the file, atomically: another process may be
    writing it too, and a reader must never see half a file. Widths this
    process measured win; a write lost to a race costs a later re-timing.
    The file gets the umask's mode, as any other (a temporary file's 0600
    kept workers of another account from reading what ``models tune``
    timed, so they timed the widths again during tasks)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        merged = {**_load(path), **ratios}
        text = json.dumps({str(width): round(ratio, 3) for width, ratio in sorted(merged.items())})
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            with open(temporary, "x") as handle:  # 0666 less the umask
                handle.write(text)
            os.replace(temporary, path)
        except OSError:
            temporary.unlink(missing_ok=True)
            raise
    except OSError as exc:
        log.warning("could not keep width timings in %s: %s", path, exc)
