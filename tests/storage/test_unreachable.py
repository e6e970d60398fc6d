"""A store that is down or frozen fails fast, as StorageUnavailableError (the
API's 503), not after botocore's default 60 s per try times five tries."""

from __future__ import annotations

import time

import pytest

from tests.storage.unreachable import FrozenStore, closed_endpoint
from upscayl_cloud.storage.base import MultipartError, StorageUnavailableError
from upscayl_cloud.storage.s3 import S3Storage
from upscayl_cloud.storage.s3client import make_client


def _store(endpoint: str) -> S3Storage:
    client = make_client(
        endpoint, "us-east-1", "key", "secret", connect_timeout=1, read_timeout=1, max_attempts=2
    )
    return S3Storage(client, "bucket")


def test_a_frozen_store_times_out_as_unavailable() -> None:
    with FrozenStore() as frozen:
        store = _store(frozen.url)
        started = time.monotonic()
        with pytest.raises(StorageUnavailableError):
            store.size("uploads/a.png")
        with pytest.raises(StorageUnavailableError):
            store.create_multipart("uploads/a.png")
        # 2 calls x 2 tries x 1 s, plus backoff: ~4 s. The bound is generous
        # for a busy machine, yet far below one untimed try (60 s).
        assert time.monotonic() - started < 30
        assert frozen.connections == 4  # every try counted, none beyond


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.write_stream("k.png", iter([b"x"]), 8),
        lambda s: s.read_head("k.png", 4),
        lambda s: s.size("k.png"),
        lambda s: s.delete("k.png"),
        lambda s: s.delete_prefix("k"),
        lambda s: s.create_multipart("k.png"),
        lambda s: s.abort_multipart("k.png", "id"),
        lambda s: s.ensure_bucket(),
    ],
)
def test_a_refused_connection_is_unavailable_everywhere(call: object) -> None:
    with pytest.raises(StorageUnavailableError):
        call(_store(closed_endpoint()))  # type: ignore[operator]


def test_complete_on_a_refused_connection_is_unavailable_not_a_refusal() -> None:
    from upscayl_cloud.storage.base import CompletedPart

    with pytest.raises(StorageUnavailableError) as caught:
        _store(closed_endpoint()).complete_multipart("k.png", "id", [CompletedPart(1, '"e"')])
    assert not isinstance(caught.value, MultipartError)
