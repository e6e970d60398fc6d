"""The keeper's policy, with plain holders that record their releases.

The OpenVINO tests (test_openvino.py) show the same policy on real compiled
models and real memory; these pin down the rules on their own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from upscayl_cloud.engine.backends.memory_keeper import MemoryKeeper


class _Holder:
    def __init__(self, kib: int, busy: bool = False) -> None:
        self.kib = kib
        self.busy = busy
        self.releases = 0

    def release_if_idle(self) -> bool:
        if self.busy:
            return False
        self.releases += 1
        return True


def _run(keeper: MemoryKeeper, holder: _Holder, budget: int) -> None:
    keeper.make_room(holder, budget)
    keeper.used(holder)


def test_recent_models_keep_their_memory_within_the_budget():
    keeper = MemoryKeeper()
    a, b, c = _Holder(40), _Holder(40), _Holder(40)
    for holder in (a, b):
        _run(keeper, holder, 100)
    keeper.trim(100)
    assert keeper.holding([a, b]) == 2 and a.releases == b.releases == 0
    _run(keeper, c, 100)  # 40 + 40 + 40 > 100: the oldest lets go first
    assert (a.releases, b.releases, c.releases) == (1, 0, 0)
    assert keeper.holding([a, b, c]) == 2


def test_the_oldest_lets_go_before_the_newcomer_runs():
    keeper = MemoryKeeper()
    old, new = _Holder(80), _Holder(30)
    _run(keeper, old, 100)
    keeper.make_room(new, 100)
    assert old.releases == 1  # released before ``new`` ran, not after
    assert keeper.holding([old]) == 0


def test_running_the_same_model_again_releases_nothing():
    keeper = MemoryKeeper()
    holder = _Holder(60)
    for _ in range(5):
        _run(keeper, holder, 100)
        keeper.trim(100)
    assert holder.releases == 0 and keeper.holding([holder]) == 1


def test_a_model_larger_than_the_budget_runs_and_then_lets_go():
    keeper = MemoryKeeper()
    small, large = _Holder(10), _Holder(500)
    _run(keeper, small, 100)
    _run(keeper, large, 100)
    assert small.releases == 1 and large.releases == 0
    keeper.trim(100)
    assert large.releases == 1 and keeper.holding([small, large]) == 0


def test_a_busy_model_is_skipped_and_released_later():
    keeper = MemoryKeeper()
    first, second = _Holder(80, busy=True), _Holder(80)
    _run(keeper, first, 100)
    _run(keeper, second, 100)
    assert first.releases == 0 and keeper.holding([first]) == 1
    first.busy = False
    keeper.trim(100)
    assert first.releases == 1 and keeper.holding([first, second]) == 1


@contextmanager
def _another_thread(work: Callable[[], None]) -> Iterator[None]:
    """Run ``work`` on a thread that stays alive until the block ends."""
    done, finish = threading.Event(), threading.Event()

    def run() -> None:
        work()
        done.set()
        finish.wait()

    thread = threading.Thread(target=run)
    thread.start()
    done.wait()
    try:
        yield
    finally:
        finish.set()
        thread.join()


def test_each_thread_has_its_own_budget_while_it_lives():
    keeper = MemoryKeeper()
    mine, theirs = _Holder(80), _Holder(80)

    def theirs_pass() -> None:
        _run(keeper, theirs, 100)
        keeper.trim(100)

    with _another_thread(theirs_pass):
        _run(keeper, mine, 100)
        keeper.trim(100)
        assert keeper.holding([mine, theirs]) == 2  # 160 > 100, but two budgets
    keeper.trim(100)  # the other thread has ended: its model lets go
    assert (theirs.releases, mine.releases) == (1, 0)


def test_a_model_a_thread_still_wants_is_not_released_by_another():
    keeper = MemoryKeeper()
    shared, other = _Holder(80), _Holder(80)
    with _another_thread(lambda: _run(keeper, shared, 100)):
        _run(keeper, shared, 100)
        _run(keeper, other, 100)  # this thread lets ``shared`` go; the worker does not
        assert shared.releases == 0


def test_a_forgotten_model_is_no_longer_held():
    keeper = MemoryKeeper()
    holder = _Holder(10)
    _run(keeper, holder, 100)
    keeper.forget(holder)
    assert keeper.holding([holder]) == 0
    keeper.trim(100)
    assert holder.releases == 0  # evicted: dropped, not released


def test_a_model_run_again_while_it_is_released_stays_tracked():
    """Between choosing a model to release and releasing it, another thread
    may run it again and allocate its memory anew; the keeper must still
    count it as holding memory, or nothing would ever release it. The
    holder here runs ``used`` from inside its release to stand in for that
    other thread (a timing window too narrow to hit reliably with threads)."""
    keeper = MemoryKeeper()

    class _RunMeanwhile(_Holder):
        def release_if_idle(self) -> bool:
            keeper.used(self)  # the other thread's call finished in the window
            return super().release_if_idle()

    old, new = _RunMeanwhile(80), _Holder(80)
    _run(keeper, old, 100)
    _run(keeper, new, 100)
    assert old.releases == 1
    assert keeper.holding([old]) == 1  # still tracked: a later trim can release it
