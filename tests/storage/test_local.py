"""The local backend against the storage contract, on a real folder."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.storage.refusing import entries_fixed
from upscayl_cloud.storage.base import (
    MIN_PART_BYTES,
    CompletedPart,
    MultipartError,
    ObjectMissingError,
    ObjectStorage,
    ObjectTooLargeError,
    StorageError,
)
from upscayl_cloud.storage.local import LocalStorage

DAY = 24 * 3600


@pytest.fixture
def store(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "objects", [b"secret"])


def test_conforms_to_the_protocol(store: LocalStorage) -> None:
    assert isinstance(store, ObjectStorage)


def test_write_read_delete(store: LocalStorage, tmp_path: Path) -> None:
    assert store.write_stream("a/b/c.png", iter([b"12", b"34"]), 10) == 4
    assert store.size("a/b/c.png") == 4
    assert store.read_head("a/b/c.png", 3) == b"123"
    store.download_to("a/b/c.png", tmp_path / "copy")
    assert (tmp_path / "copy").read_bytes() == b"1234"
    store.delete("a/b/c.png")
    assert store.size("a/b/c.png") is None
    with pytest.raises(ObjectMissingError):
        store.read_head("a/b/c.png", 1)


def test_size_cap_leaves_nothing_behind(store: LocalStorage) -> None:
    with pytest.raises(ObjectTooLargeError):
        store.write_stream("k", iter([b"x" * 6, b"x" * 6]), 10)
    assert store.size("k") is None
    assert not [p for p in store.root.rglob("*") if p.is_file()]


@pytest.mark.parametrize("key", ["../escape", "/abs", "a/../../b", "a//b", ".multipart/x"])
def test_keys_cannot_leave_the_root(store: LocalStorage, key: str) -> None:
    with pytest.raises(ObjectMissingError):
        store.path_of(key)


def test_delete_prefix(store: LocalStorage) -> None:
    store.write_stream("r/t/1/0.png", iter([b"a"]), 5)
    store.write_stream("r/t/2/0.png", iter([b"b"]), 5)
    store.delete_prefix("r/t/1")
    assert store.size("r/t/1/0.png") is None
    assert store.size("r/t/2/0.png") == 1


def test_deletes_leave_no_empty_folders(store: LocalStorage) -> None:
    """Each task's results have folders of their own: every task left four
    empty ones behind for good."""
    store.write_stream("results/a/t1/1/0.png", iter([b"a"]), 5)
    store.write_stream("results/a/t2/1/0.png", iter([b"b"]), 5)
    store.write_stream("thumbs/a/t1/1/0.webp", iter([b"c"]), 5)
    store.delete("results/a/t1/1/0.png")
    store.delete_prefix("thumbs/a/t1/1")
    folders = {str(p.relative_to(store.root)) for p in store.root.rglob("*") if p.is_dir()}
    assert folders == {"results", "results/a", "results/a/t2", "results/a/t2/1"}
    store.delete("results/a/t2/1/0.png")
    assert list(store.root.iterdir()) == [] and store.root.is_dir()
    assert store.write_stream("results/a/t3/1/0.png", iter([b"d"]), 5) == 1  # made again


def test_a_file_the_system_will_not_delete_is_a_storage_error(store: LocalStorage) -> None:
    """Raised as the OS's error, it ended the sweeper's whole pass (S3's
    refusals were StorageErrors already). A folder where the file should be
    is a refusal root cannot override."""
    store.path_of("uploads/a/x.png").mkdir(parents=True)
    (store.path_of("uploads/a/x.png") / "inside").write_bytes(b"x")
    with pytest.raises(StorageError, match=r"could not delete uploads/a/x\.png"):
        store.delete("uploads/a/x.png")


def _part(store: LocalStorage, upload_id: str, n: int, data: bytes) -> CompletedPart:
    etag = store.write_part(upload_id, n, iter([data]), len(data))
    assert etag == f'"{hashlib.md5(data).hexdigest()}"'
    return CompletedPart(n, etag)


def test_multipart_joins_parts_in_order(store: LocalStorage) -> None:
    upload_id = store.create_multipart("up/file.png")
    first = b"a" * MIN_PART_BYTES
    parts = [_part(store, upload_id, 1, first), _part(store, upload_id, 2, b"tail")]
    assert store.complete_multipart("up/file.png", upload_id, parts) == MIN_PART_BYTES + 4
    assert store.read_head("up/file.png", 1) == b"a"
    # Completing a finished upload again answers its size, joining nothing.
    assert store.complete_multipart("up/file.png", upload_id, parts[1:]) == MIN_PART_BYTES + 4
    assert store.read_head("up/file.png", 1) == b"a"


def test_multipart_refusals(store: LocalStorage) -> None:
    upload_id = store.create_multipart("up/f")
    small = _part(store, upload_id, 1, b"small")
    last = _part(store, upload_id, 2, b"last")
    with pytest.raises(MultipartError, match="5 MiB"):
        store.complete_multipart("up/f", upload_id, [small, last])
    with pytest.raises(MultipartError, match="ascending"):
        store.complete_multipart("up/f", upload_id, [last, small])
    with pytest.raises(MultipartError, match="ETag"):
        store.complete_multipart("up/f", upload_id, [CompletedPart(1, '"0000"')])
    with pytest.raises(MultipartError, match="not uploaded"):
        store.complete_multipart("up/f", upload_id, [CompletedPart(3, '"0000"')])
    # A missing part is named as missing, not as making part 2 "too small".
    with pytest.raises(MultipartError, match="part 3 was not uploaded"):
        store.complete_multipart("up/f", upload_id, [small, last, CompletedPart(3, '"0"')])
    with pytest.raises(MultipartError):
        store.complete_multipart("up/f", "nosuchid", [small])
    store.abort_multipart("up/f", upload_id)
    with pytest.raises(MultipartError):
        store.write_part(upload_id, 1, iter([b"x"]), 10)


def test_concurrent_completions_of_one_upload_all_succeed(store: LocalStorage) -> None:
    """A client retrying a completion whose answer is slow races its own
    first try: whichever joins first, every try answers the object's size."""
    upload_id = store.create_multipart("up/raced.png")
    parts = [
        _part(store, upload_id, 1, b"a" * MIN_PART_BYTES),
        _part(store, upload_id, 2, b"b" * MIN_PART_BYTES),
        _part(store, upload_id, 3, b"tail"),
    ]
    with ThreadPoolExecutor(6) as pool:
        sizes = list(
            pool.map(lambda _: store.complete_multipart("up/raced.png", upload_id, parts), range(6))
        )
    assert sizes == [2 * MIN_PART_BYTES + 4] * 6
    assert store.read_head("up/raced.png", 4, 2 * MIN_PART_BYTES) == b"tail"


def test_a_folder_removed_under_a_write_is_made_again(
    store: LocalStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stand-ins, named so, for a concurrent delete emptying and removing
    the folders a write is about to use (too narrow a window to provoke):
    between the folder's creation and the file's, and between a parent's
    creation and its child's."""
    import tempfile

    real_mkstemp, real_mkdir = tempfile.mkstemp, Path.mkdir
    removed: list[str] = []

    def removed_first(*args, **kwargs):  # type: ignore[no-untyped-def]
        if "mkstemp" not in removed:
            removed.append("mkstemp")
            store._remove_empty_folders(Path(kwargs["dir"]))
        return real_mkstemp(*args, **kwargs)

    def parent_gone_first(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if "mkdir" not in removed:
            removed.append("mkdir")
            raise FileNotFoundError(2, "No such file or directory", str(self.parent))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", removed_first)
    assert store.write_stream("results/a/t/1/0.png", iter([b"ab"]), 5) == 2
    monkeypatch.setattr(Path, "mkdir", parent_gone_first)
    assert store.write_stream("results/b/t/1/0.png", iter([b"abc"]), 5) == 3
    assert removed == ["mkstemp", "mkdir"]
    assert store.size("results/a/t/1/0.png") == 2 and store.size("results/b/t/1/0.png") == 3


def test_a_part_whose_upload_ends_as_it_is_written_is_refused_not_kept(
    store: LocalStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stand-in, named so, for a completion or abort landing between the
    part's check of its upload and its write: the upload's folder was made
    again for it, the part stored, answered 200, and kept until the upload's
    row was purged."""
    import tempfile

    upload_id = store.create_multipart("uploads/a/x.png")
    real_mkstemp = tempfile.mkstemp

    def aborted_first(*args, **kwargs):  # type: ignore[no-untyped-def]
        store.abort_multipart("uploads/a/x.png", upload_id)
        return real_mkstemp(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", aborted_first)
    with pytest.raises(MultipartError, match="unknown or finished upload id"):
        store.write_part(upload_id, 1, iter([b"late"]), 4)
    assert list((store.root / ".multipart").iterdir()) == []  # nor its renamed-away folder


def test_an_upload_folder_the_system_will_not_remove_is_a_storage_error(
    store: LocalStorage,
) -> None:
    """A real refusal (tests/storage/refusing.py). Raised as the OS's error,
    it ended the sweeper's whole pass, and every later one, since the same
    upload came first again: expired results were never deleted."""
    upload_id = store.create_multipart("uploads/a/x.png")
    part = _part(store, upload_id, 1, b"data")
    refused = pytest.raises(StorageError, match=f"could not remove multipart upload {upload_id}")
    with entries_fixed(store.root / ".multipart"), refused:
        store.abort_multipart("uploads/a/x.png", upload_id)
    store.abort_multipart("uploads/a/x.png", upload_id)  # allowed again: gone
    assert list((store.root / ".multipart").iterdir()) == []
    with pytest.raises(MultipartError, match="unknown"):
        store.complete_multipart("uploads/a/x.png", upload_id, [part])


def test_a_completion_whose_parts_cannot_be_removed_still_succeeds(
    store: LocalStorage, caplog: pytest.LogCaptureFixture
) -> None:
    """The object is whole under its key when the parts' folder is removed:
    a refusal then is logged, not a 500 that sends the client to repeat a
    completion that succeeded. The parts go with the upload's original (the
    sweeper aborts it), as an abort then shows."""
    upload_id = store.create_multipart("uploads/a/x.png")
    parts = [_part(store, upload_id, 1, b"a" * MIN_PART_BYTES), _part(store, upload_id, 2, b"z")]
    with caplog.at_level(logging.WARNING), entries_fixed(store.root / ".multipart"):
        assert store.complete_multipart("uploads/a/x.png", upload_id, parts) == MIN_PART_BYTES + 1
    assert store.read_head("uploads/a/x.png", 2, MIN_PART_BYTES - 1) == b"az"
    assert "completed uploads/a/x.png, but its parts stay" in caplog.text
    assert (store.root / ".multipart" / upload_id).is_dir()
    store.abort_multipart("uploads/a/x.png", upload_id)
    assert list((store.root / ".multipart").iterdir()) == []
    assert store.size("uploads/a/x.png") == MIN_PART_BYTES + 1


#: A process that stops mid-way for its parent to kill it (SIGKILL): in a
#: write after its first chunk, or in an abort between renaming the upload's
#: folder away and removing it.
_PAUSED_CHILD = r"""
import shutil, sys, time
from pathlib import Path
from upscayl_cloud.storage.local import LocalStorage

def paused(first):
    yield first
    print("paused", flush=True)
    time.sleep(600)

store = LocalStorage(Path(sys.argv[1]), [b"secret"])
what, name = sys.argv[2], sys.argv[3]
if what == "object":
    store.write_stream(name, paused(b"x" * 1000), 1 << 20)
elif what == "part":
    store.write_part(name, 1, paused(b"x" * 1000), 2000)
else:
    shutil.rmtree = lambda *args, **kwargs: (print("paused", flush=True), time.sleep(600))
    store.abort_multipart("uploads/a/any.png", name)
"""


@contextmanager
def _paused_child(store: LocalStorage, what: str, name: str) -> Iterator[None]:
    """Inside: a process paused mid-way (``_PAUSED_CHILD``); killed on leaving."""
    command = [sys.executable, "-c", _PAUSED_CHILD, str(store.root), what, name]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "paused"
        yield
    finally:
        child.kill()
        child.wait(30)


def _leftovers(store: LocalStorage) -> list[Path]:
    return sorted(p for p in store.root.rglob("*") if p.name.startswith((".tmp-", ".gone-")))


def test_leftovers_of_killed_processes_are_reclaimed_once_stale(store: LocalStorage) -> None:
    """Processes killed (SIGKILL) mid-write leave their temporary file beside
    an object or a part, and mid-abort an upload's folder renamed away: for
    good, and the first kept its folder from being removed. Once untouched
    past the bound (aged with ``os.utime``, standing in for waiting a day)
    they go, and the folders they kept; a live write's file, fresh, stays,
    and so does the live upload whose part was cut off."""
    upload_id = store.create_multipart("uploads/a/x.png")
    aborted = store.create_multipart("uploads/a/y.png")
    _part(store, aborted, 1, b"part")
    for what, name in (("object", "uploads/acct/a.png"), ("part", upload_id), ("abort", aborted)):
        with _paused_child(store, what, name):
            pass
    stale = _leftovers(store)
    assert [p.parent.name for p in stale] == [".multipart", upload_id, "acct"]
    assert not store.reclaim_leftovers(time.time() - DAY)  # a day has not passed
    for path in stale:
        os.utime(path, (time.time() - DAY - 60,) * 2)
    with _paused_child(store, "object", "uploads/live/b.png"):
        assert store.reclaim_leftovers(time.time() - DAY) == 3
        assert [p.parent.name for p in _leftovers(store)] == ["live"]
        assert not (store.root / "uploads" / "acct").exists()
        assert (store.root / ".multipart" / upload_id).is_dir()
        assert _part(store, upload_id, 1, b"still open")
    assert store.write_stream("uploads/live/b.png", iter([b"b"]), 5) == 1
    assert [p.parent.name for p in _leftovers(store)] == ["live"]  # the one killed just now
