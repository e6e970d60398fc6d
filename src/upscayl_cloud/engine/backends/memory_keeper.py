"""Which compiled models keep their working memory between network calls.

OpenVINO keeps each compiled model's peak working memory (per stream) until
told to hand it back. Keeping all of them held 710 MiB for three image sizes
of one network, and a worker going through many networks would hold one
peak each; handing all of them back after every pass cost the next pass
0.03-0.2 s to allocate and touch the buffers again, a fifth of waifu2x's
time on a small image, and twice that for a two-pass pipeline
(bench/README.md).

So each worker thread's models keep their memory, most recently used
first, while their estimated total stays within one tile budget
(``tile_memory_mb``, the memory one network call may take); older ones hand
theirs back as soon as a newer one needs the room, before it runs. A worker
never holds more than the budget it was already allowed for one call, and
repeated work (a batch of same-size images, the passes of one pipeline)
starts warm.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Protocol


class Holder(Protocol):
    """A compiled model as the keeper sees it."""

    #: Estimated working memory while it holds it (KiB).
    kib: int

    def release_if_idle(self) -> bool:
        """Hand the memory back unless a call is running; True if it did.
        Must not call into the keeper (the keeper calls it without its own
        lock, so the two locks never nest)."""


class MemoryKeeper:
    """Per-thread, most-recent-first lists of holders within a budget."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: Each thread's holders, most recently used first.
        self._recent: dict[int, list[Holder]] = {}
        #: Holders that ran since their memory was last handed back.
        self._holding: set[Holder] = set()

    def make_room(self, holder: Holder, budget_kib: int) -> None:
        """Before this thread runs ``holder``: it goes first in the thread's
        list, and whatever no longer fits the budget beside it lets go."""
        self._trim(holder, budget_kib)

    def used(self, holder: Holder) -> None:
        """After a call: ``holder`` holds memory now."""
        with self._lock:
            self._holding.add(holder)

    def trim(self, budget_kib: int) -> None:
        """End of a pass: hand back what no longer fits this thread's budget."""
        self._trim(None, budget_kib)

    def forget(self, holder: Holder) -> None:
        """An evicted holder: nothing may keep it alive."""
        with self._lock:
            self._holding.discard(holder)
            for recent in self._recent.values():
                if holder in recent:
                    recent.remove(holder)

    def holding(self, holders: Iterable[Holder]) -> int:
        """How many of ``holders`` hold working memory now."""
        with self._lock:
            return sum(holder in self._holding for holder in holders)

    def _trim(self, incoming: Holder | None, budget_kib: int) -> None:
        thread = threading.get_ident()
        with self._lock:
            recent = self._recent.get(thread)
            if (
                incoming is not None
                and recent
                and recent[0] is incoming
                and sum(holder.kib for holder in recent) <= budget_kib
            ):
                return  # the common case: the next tile of the same pass
            alive = {each.ident for each in threading.enumerate()}
            for gone in [ident for ident in self._recent if ident not in alive]:
                del self._recent[gone]
            recent = self._recent.setdefault(thread, [])
            if incoming is not None:
                if incoming in recent:
                    recent.remove(incoming)
                recent.insert(0, incoming)
            kept: list[Holder] = []
            total = 0
            for holder in recent:
                total += holder.kib
                if total > budget_kib and holder is not incoming:
                    break
                kept.append(holder)
            self._recent[thread] = kept
            wanted = {holder for each in self._recent.values() for holder in each}
            candidates = [holder for holder in self._holding if holder not in wanted]
            # Taken out now, under the lock: a thread that runs one of them
            # before its release below puts it back (``used``), so memory
            # allocated again is never left untracked.
            self._holding.difference_update(candidates)
        for holder in candidates:
            if not holder.release_if_idle():
                with self._lock:
                    self._holding.add(holder)
