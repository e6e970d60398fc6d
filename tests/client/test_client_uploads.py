"""Multipart uploads over the threshold, and an interrupted one resumed from its state."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from support.server import Server
from tests.client.helpers import FAST, MIB, QUICK_POLL, QUICK_RETRY, big_png
from tests.client.relay import Relay, Reply, Seen
from upscayl_cloud.client import ApiError, Client, upload_file
from upscayl_cloud.client.uploads import state_path


class SimulatedCrashError(Exception):
    """Stands for the process dying after some parts were stored."""


def test_server_threshold_makes_a_parallel_multipart_upload(client: Client, tmp_path: Path) -> None:
    source = big_png(tmp_path / "big.png", 6 * MIB)
    parts: list[int] = []
    sent: list[int] = []
    entry = upload_file(client, source, on_part=parts.append, on_bytes=sent.append)
    assert sorted(parts) == [1, 2]  # the server's threshold (5 MiB) chose multipart
    assert sum(sent) == source.stat().st_size
    assert not state_path(source).exists()
    task_id = client.start_task([entry], model=FAST, scale=2)
    done = client.wait(task_id, timeout=60, raise_on_failure=True)
    assert done["files"][0]["fileSize"] == source.stat().st_size


def test_client_threshold_asks_for_multipart(client: Client, tmp_path: Path) -> None:
    source = big_png(tmp_path / "asked.png", 4 * MIB)  # under the server's threshold
    parts: list[int] = []
    upload_file(client, source, multipart_threshold=1 * MIB, on_part=parts.append)
    assert parts == [1]  # one (last) part may be any size
    parts.clear()
    upload_file(client, source, multipart_threshold=8 * MIB, on_part=parts.append)
    assert parts == []  # a single PUT


def test_interrupted_upload_resumes_from_its_state_file(
    server: Server, api_key: str, tmp_path: Path
) -> None:
    source = big_png(tmp_path / "resume.png", 11 * MIB)  # three 5 MiB parts

    def die_after_first(number: int) -> None:
        raise SimulatedCrashError(number)

    first = Client(server.url, api_key)
    with pytest.raises(SimulatedCrashError):
        upload_file(first, source, part_workers=1, on_part=die_after_first)
    first.close()  # the client is gone; only the state file remains
    saved = json.loads(state_path(source).read_text())
    assert list(saved["etags"]) == ["1"] and len(saved["link"]["parts"]) == 3

    parts: list[int] = []
    sent: list[int] = []
    with Client(server.url, api_key, poll=QUICK_POLL) as second:
        entry = upload_file(second, source, on_part=parts.append, on_bytes=sent.append)
        assert sorted(parts) == [2, 3]  # part 1 was not sent again
        assert entry["fileName"] == saved["link"]["fileName"]
        assert sum(sent) == source.stat().st_size  # resumed bytes count as done
        assert not state_path(source).exists()
        task_id = second.start_task([entry], model=FAST, scale=2)
        assert second.wait(task_id, timeout=60)["status"] == "completed"


def test_stale_state_is_ignored(client: Client, tmp_path: Path) -> None:
    source = big_png(tmp_path / "stale.png", 6 * MIB)
    state_path(source).write_text('{"version": 1, "baseUrl": "elsewhere"}')
    parts: list[int] = []
    upload_file(client, source, on_part=parts.append)
    assert sorted(parts) == [1, 2] and not state_path(source).exists()


_COMPLETE = "/complete-multipart-upload"
_LOST = Reply.json(500, {"error": "INTERNAL_SERVER_ERROR", "message": "answer lost"})


def test_a_400_after_a_lost_completion_is_raised_and_the_state_kept(
    server: Server, api_key: str, tmp_path: Path
) -> None:
    """The relay answers the first completion 500 and the second 400 with
    another server's "Missing required parameters", sending neither on (a
    stand-in: ours answers neither). Any 400 after a 500 was taken for
    "completed already": the state file went, the parts were never joined,
    and start-task met a file that was never uploaded."""
    source = big_png(tmp_path / "big.png", 6 * MIB)
    refusing = True
    completions: list[int] = []

    def edit(seen: Seen, forward: Callable[[], httpx.Response]) -> httpx.Response | Reply:
        if seen.path != _COMPLETE or not refusing:
            return forward()
        completions.append(1)
        if len(completions) == 1:
            return _LOST
        return Reply.json(400, {"error": "BAD_REQUEST", "message": "Missing required parameters"})

    with (
        Relay(server.url, edit) as relay,
        Client(relay.url, api_key, poll=QUICK_POLL, retry=QUICK_RETRY) as api,
    ):
        with pytest.raises(ApiError) as refused:
            upload_file(api, source)
        assert (refused.value.status_code, refused.value.message) == (
            400,
            "Missing required parameters",
        )
        assert len(completions) == 2 and state_path(source).exists()
        refusing = False
        parts: list[int] = []
        entry = upload_file(api, source, on_part=parts.append)  # resumed: no part sent again
        assert parts == [] and not state_path(source).exists()
        task_id = api.start_task([entry], model=FAST, scale=2)
        assert api.wait(task_id, timeout=60)["status"] == "completed"


@pytest.mark.parametrize(
    "repeat",
    [
        {
            "error": "BAD_REQUEST",
            "message": "Cannot complete multipart upload: unknown or already completed upload id",
        },
        {"error": "NoSuchUpload", "message": "The specified upload does not exist."},
    ],
)
def test_a_400_saying_completed_already_after_a_lost_answer_is_success(
    server: Server, api_key: str, tmp_path: Path, repeat: dict[str, str]
) -> None:
    """The first completion reaches the real server (the parts are joined)
    but its answer is lost (the relay's 500); the repeat is answered 400 as
    this server's store words it, or as S3 does (``NoSuchUpload``): a
    stand-in for a server that refuses a repeat (ours answers success)."""
    source = big_png(tmp_path / "big.png", 6 * MIB)
    completions: list[int] = []

    def edit(seen: Seen, forward: Callable[[], httpx.Response]) -> httpx.Response | Reply:
        if seen.path != _COMPLETE:
            return forward()
        completions.append(1)
        if len(completions) == 1:
            assert forward().is_success  # joined for real
            return _LOST
        return Reply.json(400, repeat)

    with (
        Relay(server.url, edit) as relay,
        Client(relay.url, api_key, poll=QUICK_POLL, retry=QUICK_RETRY) as api,
    ):
        entry = upload_file(api, source)
        assert len(completions) == 2 and not state_path(source).exists()
        task_id = api.start_task([entry], model=FAST, scale=2)
        assert api.wait(task_id, timeout=60)["status"] == "completed"
