"""Answering the local store's signed links: the part S3 plays in scale-out.

Checks, in order: the signature (method, key, expiry, type, length, part),
then the expiry, then the request's own type and size. Upload links that
fail any check are refused with 403, as S3 refuses a presigned PUT whose
Content-Length differs from the signed one (tests/storage/test_contract.py
holds both stores to the same statuses). The one exception has no S3
counterpart: a body without Content-Length (chunked) that outgrows the link
is cut off while it streams, 400 FILE_SIZE_EXCEEDED, since only then is its
size known. A download link past its expiry answers 410. Links are signed
for at most an hour while results are kept for days, so the file is usually
still there: the message sends the caller to get-task-status for fresh links.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from upscayl_cloud.db.engine import now_ms
from upscayl_cloud.services.context import Context
from upscayl_cloud.services.errors import (
    BadRequestError,
    FileSizeExceededError,
    ForbiddenError,
    GoneError,
    NotFoundError,
)
from upscayl_cloud.storage.base import (
    MultipartError,
    ObjectMissingError,
    ObjectTooLargeError,
    ObjectTooSmallError,
)
from upscayl_cloud.storage.local import LocalStorage
from upscayl_cloud.storage.signing import LinkClaims, LinkExpiredError, SignatureError


def _size_differs(sent: int, issued: int) -> str:
    """Both numbers: the caller sees at once which file or part went wrong."""
    return (
        f"The body is {sent} bytes; this link was issued for exactly {issued} "
        "(the fileSize given to get-upload-url, or this part's share of it)"
    )


_UPLOAD_LINK_EXPIRED = "This upload link has expired; call get-upload-url for a new one"

EXPIRED_DOWNLOAD_MESSAGE = (
    "This link has expired. Call get-task-status for fresh downloadLink and thumbnailLink; "
    "they work until the result's expiresAt"
)


@dataclass(frozen=True)
class Download:
    path: Path
    download_name: str | None


def _local(ctx: Context) -> LocalStorage:
    if not isinstance(ctx.storage, LocalStorage):
        raise NotFoundError()
    return ctx.storage


def _int(query: Mapping[str, str], name: str) -> int:
    """A number of a link as it was signed: digits only, as it was written
    (``int()`` also took ``+N``, ``N_000`` and spaces, so an altered link
    still worked). No number we sign has 20 digits: a longer one is refused
    before ``int()``, which raises past 4,300 digits (a 500, unsigned)."""
    value = query.get(name, "")
    if not (value.isascii() and value.isdigit() and len(value) < 20) or value != str(int(value)):
        raise ForbiddenError()
    return int(value)


#: The most of a request's own Content-Type a refusal repeats.
_SHOWN_TYPE_CHARS = 100


def _sent_type(content_type: str | None) -> str:
    """The request's Content-Type as sent: compared exactly, as S3 compares
    the type it signed. Reading only its media type, ignoring case, took
    ``image/png; charset=binary`` and ``IMAGE/PNG``, which S3 refuses with
    403: a client built against the embedded server then failed on S3."""
    return content_type or ""


@dataclass(frozen=True)
class PutGrant:
    """What a verified PUT link allows: one object, or one part of a multipart upload."""

    key: str
    max_length: int
    upload_id: str = ""
    part_number: int = 0

    @property
    def is_part(self) -> bool:
        return bool(self.upload_id)


def _check_named_method(query: Mapping[str, str], method: str) -> None:
    """The link's ``method`` must be the one it is used with. The signature
    covers the method of the request, so a changed ``method=`` did not stop
    a link from working: an altered link, which is refused whole."""
    if query.get("method") != method:
        raise ForbiddenError()


def authorize_put(
    ctx: Context,
    key: str,
    query: Mapping[str, str],
    content_type: str | None,
    content_length: int | None,
) -> PutGrant:
    """Check a PUT link before a single byte of its body is read."""
    storage = _local(ctx)
    _check_named_method(query, "PUT")
    part_number = _int(query, "partNumber") if "partNumber" in query else 0
    upload_id = query.get("uploadId", "")
    is_part = bool(part_number or upload_id)
    claims = LinkClaims(
        method="PUT",
        key=key,
        expires_at_ms=_int(query, "expires"),
        content_type="" if is_part else _sent_type(content_type),
        max_length=_int(query, "length"),
        upload_id=upload_id,
        part_number=part_number,
    )
    try:
        storage.signer.verify(claims, query.get("signature", ""), now_ms())
    except LinkExpiredError as exc:  # the signature held: only the time is wrong
        raise ForbiddenError(_UPLOAD_LINK_EXPIRED) from exc
    except SignatureError as exc:
        raise ForbiddenError(_put_refusal(storage, claims, query)) from exc
    if not is_part and query.get("type", claims.content_type) != claims.content_type:
        raise ForbiddenError()  # the type it names is not the one it was signed for
    if content_length is not None and content_length > claims.max_length:
        raise ForbiddenError(_size_differs(content_length, claims.max_length))
    # Parts too: the split is planned by the service, and S3 signs each part's
    # exact length, so both stores refuse the same bodies.
    if content_length is not None and content_length != claims.max_length:
        raise ForbiddenError(_size_differs(content_length, claims.max_length))
    return PutGrant(key, claims.max_length, upload_id, part_number)


def _put_refusal(storage: LocalStorage, claims: LinkClaims, query: Mapping[str, str]) -> str:
    """Why a PUT link was refused. The Content-Type is part of the signature,
    so a request without the type the link was issued for (curl's
    ``--data-binary`` sends a form type) used to read as a link "invalid or
    expired". When the link verifies with the type it names, that is the
    only thing wrong with it, and the answer says so."""
    issued_for = query.get("type", "")
    if claims.part_number or not issued_for or issued_for == claims.content_type:
        return ForbiddenError.public_message
    try:
        as_issued = replace(claims, content_type=issued_for)
        storage.signer.verify(as_issued, query["signature"], now_ms())
    except (SignatureError, KeyError):
        return ForbiddenError.public_message
    except LinkExpiredError:
        return _UPLOAD_LINK_EXPIRED
    sent = claims.content_type[:_SHOWN_TYPE_CHARS] or "none"
    return f"This link is for Content-Type {issued_for}; the request sent {sent}"


def store_put(ctx: Context, grant: PutGrant, chunks: Iterator[bytes]) -> str:
    """Store the body of an authorised PUT; returns its ETag, the quoted MD5
    of the bytes, as S3 answers both a part and a whole object (a client may
    compare it with its own digest). A body of another length than the link
    signs is refused before anything is replaced."""
    storage = _local(ctx)
    try:
        if grant.is_part:
            return storage.write_part(grant.upload_id, grant.part_number, chunks, grant.max_length)
        return storage.write_exact(grant.key, chunks, grant.max_length)
    except ObjectTooLargeError as exc:
        raise FileSizeExceededError(
            f"The body is larger than the {grant.max_length} bytes this link was issued for"
        ) from exc
    except ObjectTooSmallError as exc:
        raise ForbiddenError(
            f"The body ended before the {grant.max_length} bytes this link was issued for"
        ) from exc
    except MultipartError as exc:
        raise BadRequestError(str(exc)) from exc


def open_download(ctx: Context, key: str, query: Mapping[str, str]) -> Download:
    """The file behind a signed GET link."""
    storage = _local(ctx)
    _check_named_method(query, "GET")
    name = query.get("name") or None
    claims = LinkClaims("GET", key, _int(query, "expires"), name or "")
    try:
        storage.signer.verify(claims, query.get("signature", ""), now_ms())
    except SignatureError as exc:
        raise ForbiddenError() from exc
    except LinkExpiredError as exc:
        raise GoneError(EXPIRED_DOWNLOAD_MESSAGE) from exc
    try:
        path = storage.path_of(key)
    except ObjectMissingError as exc:
        raise NotFoundError() from exc
    if not path.is_file():
        raise NotFoundError("The file is no longer available")
    return Download(path=path, download_name=name)
