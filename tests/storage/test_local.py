"""The local backend against the storage contract, on a real folder."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

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
