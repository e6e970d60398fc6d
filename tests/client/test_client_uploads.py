"""Multipart uploads over the threshold, and an interrupted one resumed from its state."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support.server import Server
from tests.client.helpers import FAST, MIB, QUICK_POLL, big_png
from upscayl_cloud.client import Client, upload_file
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
