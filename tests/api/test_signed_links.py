"""The local store's signed download links, through the real app."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from fastapi.testclient import TestClient

from upscayl_cloud.db.engine import now_ms
from upscayl_cloud.services.context import Context

RESULT = b"\x89PNG-result"


def _stored_result_link(client: TestClient) -> str:
    """A result in the local store, and a fresh download link to it."""
    ctx: Context = client.app.state.ctx
    key = "results/acct/task/1/0.png"
    ctx.storage.write_stream(key, iter([RESULT]), 100)
    base = str(client.base_url).rstrip("/")
    return ctx.storage.presign_get(base, key, now_ms() + 60_000, "a_upscayl_4x.png")


def test_expired_download_link_points_to_fresh_links(client: TestClient) -> None:
    """The link outlives itself, not the file (links last an hour, results
    days): the 410 says where to get a new link, and a new link works."""
    ctx: Context = client.app.state.ctx
    key = "results/acct/task/1/0.png"
    ctx.storage.write_stream(key, iter([b"\x89PNG-result"]), 100)
    base = str(client.base_url).rstrip("/")
    expired = ctx.storage.presign_get(base, key, now_ms() - 1000, "a_upscayl_4x.png")
    response = client.get(expired)
    payload = response.json()
    assert (response.status_code, payload["error"]) == (410, "GONE")
    assert "get-task-status" in payload["message"]
    assert "no longer available" not in payload["message"]
    fresh = ctx.storage.presign_get(base, key, now_ms() + 60_000, "a_upscayl_4x.png")
    assert client.get(fresh).content == b"\x89PNG-result"


def test_objects_are_never_sniffed_or_run_by_a_browser(client: TestClient) -> None:
    """Objects share the web page's origin: whatever bytes one holds, a
    browser shows it as the declared image or not at all."""
    ctx: Context = client.app.state.ctx
    key = "results/acct/task/1/0.png"
    ctx.storage.write_stream(key, iter([b"<script>alert(1)</script>"]), 100)
    base = str(client.base_url).rstrip("/")
    for name in ("a_upscayl_4x.png", None):
        response = client.get(ctx.storage.presign_get(base, key, now_ms() + 60_000, name))
        assert response.headers["content-type"] == "image/png"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "sandbox" in response.headers["content-security-policy"]


def test_a_non_ascii_signature_is_a_403_not_a_500(client: TestClient) -> None:
    link = _stored_result_link(client)
    forged = link.split("signature=")[0] + "signature=%C3%A9"
    for response in (client.get(forged), client.put(forged, content=b"x")):
        assert response.status_code == 403, response.text
        assert response.json()["error"] == "FORBIDDEN"


def test_a_download_link_answers_head_with_size_and_name(client: TestClient) -> None:
    link = _stored_result_link(client)
    response = client.head(link)
    assert response.status_code == 200
    assert response.headers["content-length"] == str(len(RESULT))
    assert "a_upscayl_4x.png" in response.headers["content-disposition"]
    assert response.content == b""


def test_a_link_whose_method_was_changed_is_refused(client: TestClient) -> None:
    """Every part of a link is checked, ``method=`` too (it was ignored)."""
    link = _stored_result_link(client)
    assert "method=GET" in link and client.get(link).status_code == 200
    for altered in ("method=PUT", "method=get", "method="):
        response = client.get(link.replace("method=GET", altered))
        assert response.status_code == 403, (altered, response.text)
        assert response.json()["error"] == "FORBIDDEN"
    base = str(client.base_url).rstrip("/")
    store = client.app.state.ctx.storage
    put_link = store.presign_put(base, "uploads/a/x.png", "image/png", 3, now_ms() + 60_000)
    assert "method=PUT" in put_link
    changed = client.put(
        put_link.replace("method=PUT", "method=POST"),
        content=b"abc",
        headers={"Content-Type": "image/png"},
    )
    assert changed.status_code == 403, changed.text
    # Numbers as they were signed (int() read "+N" and "0N" as N), and the
    # type named as signed, though the header is what is checked.
    expires = parse_qs(urlsplit(link).query)["expires"][0]
    # Past 4,300 digits int() itself raised: a 500 and a traceback, unsigned.
    for number in (f"%2B{expires}", f"0{expires}", f"{expires}%20", "1" * 4301):
        response = client.get(link.replace(f"expires={expires}", f"expires={number}"))
        assert response.status_code == 403, (number, response.text)
    for query in ("type=image%2Fjpeg", f"expires=%2B{expires}"):
        altered = put_link.replace("type=image%2Fpng", query)
        if query.startswith("expires"):
            put_expires = parse_qs(urlsplit(put_link).query)["expires"][0]
            altered = put_link.replace(f"expires={put_expires}", f"expires=%2B{put_expires}")
        refused = client.put(altered, content=b"abc", headers={"Content-Type": "image/png"})
        assert refused.status_code == 403, (query, refused.text)
    sent = client.put(put_link, content=b"abc", headers={"Content-Type": "image/png"})
    assert sent.status_code == 200, sent.text


def test_a_refused_short_put_leaves_the_upload_already_stored(client: TestClient) -> None:
    """A second PUT on the same link, chunked (no Content-Length to refuse
    it by) and short, was refused only once its bytes had replaced the
    stored upload, which was then deleted: the file was lost."""
    from support.context import new_principal
    from support.images import png_bytes

    ctx: Context = client.app.state.ctx
    key = new_principal(ctx, credits=10)[0]
    data = png_bytes()
    asked = client.post(
        "/get-upload-url",
        json={"originalFileName": "a.png", "fileType": "image/png", "fileSize": len(data)},
        headers={"X-API-Key": key},
    )
    link = asked.json()["data"]["uploadURL"]
    assert client.put(link, content=data, headers={"Content-Type": "image/png"}).status_code == 200

    def short_body():  # a generator: sent chunked
        yield data[:10]

    again = client.put(link, content=short_body(), headers={"Content-Type": "image/png"})
    assert again.status_code == 403, again.text
    assert again.json()["message"] == (
        f"The body ended before the {len(data)} bytes this link was issued for"
    )
    stored = ctx.storage.path_of(link.split("/objects/", 1)[1].split("?", 1)[0])
    assert stored.read_bytes() == data
    # A size refused by its Content-Length names both: which file was sent
    # to which link is then plain.
    other = client.put(link, content=data + b"more", headers={"Content-Type": "image/png"})
    assert other.status_code == 403
    assert other.json()["message"].startswith(
        f"The body is {len(data) + 4} bytes; this link was issued for exactly {len(data)}"
    )


def test_ranges_are_read_as_s3_reads_them(client: TestClient) -> None:
    """A part of the file for a resuming download; a Range that cannot be
    parsed is ignored (the whole file), one past the end is a 416 in the
    error shape (both were plain text)."""
    link = _stored_result_link(client)
    part = client.get(link, headers={"Range": "bytes=1-3"})
    assert (part.status_code, part.content) == (206, RESULT[1:4])
    assert part.headers["content-range"] == f"bytes 1-3/{len(RESULT)}"
    for unreadable in ("bytes=junk", "bytes=5-2", "pages=1-2"):
        whole = client.get(link, headers={"Range": unreadable})
        assert (whole.status_code, whole.content) == (200, RESULT), unreadable
    for method in ("GET", "HEAD"):
        past = client.request(method, link, headers={"Range": "bytes=99999-"})
        assert past.status_code == 416
        assert past.headers["content-range"] == f"bytes */{len(RESULT)}"
        if method == "GET":
            assert past.json()["error"] == "RANGE_NOT_SATISFIABLE"
            assert past.json()["message"].startswith(f"The file has {len(RESULT)} bytes")


def test_an_upload_takes_its_type_exactly_as_s3_does(client: TestClient) -> None:
    """S3 signs the Content-Type and compares it exactly: a type with a
    parameter, or in capitals, is refused there. The local store took both,
    so a client built against the embedded server failed on S3. The refusal
    says what the link is for and what was sent."""
    base = str(client.base_url).rstrip("/")
    store = client.app.state.ctx.storage
    link = store.presign_put(base, "uploads/a/x.png", "image/png", 3, now_ms() + 60_000)
    for sent in ("image/png; charset=binary", "IMAGE/PNG", "image/png;"):
        refused = client.put(link, content=b"abc", headers={"Content-Type": sent})
        assert refused.status_code == 403, (sent, refused.text)
        assert refused.json()["message"] == (
            f"This link is for Content-Type image/png; the request sent {sent}"
        )
    assert store.size("uploads/a/x.png") is None
    long = "image/png; " + "x" * 500
    refused = client.put(link, content=b"abc", headers={"Content-Type": long})
    assert refused.json()["message"].endswith(f"the request sent {long[:100]}")
    sent = client.put(link, content=b"abc", headers={"Content-Type": "image/png"})
    assert sent.status_code == 200, sent.text
