"""Objects as files in a folder; the service itself serves the signed links.

Writes go to a temporary file and are renamed into place, so a reader never
sees half an object and a crash leaves no truncated one behind. What a crash
does leave (the temporary file, or an upload's folder half removed) is taken
by :meth:`LocalStorage.reclaim_leftovers`, which the sweeper runs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from upscayl_cloud.storage.base import (
    MAX_PARTS,
    MIN_PART_BYTES,
    CompletedPart,
    MultipartError,
    ObjectMissingError,
    ObjectTooLargeError,
    ObjectTooSmallError,
    StorageError,
)
from upscayl_cloud.storage.signing import LinkClaims, Signer

log = logging.getLogger(__name__)

#: Where the service answers signed links (see api/routes/objects.py).
LINK_PATH = "/objects/"
_MULTIPART_DIR = ".multipart"
#: Names no key can take (``path_of`` refuses a dot first): a write's
#: temporary file, and an upload's folder renamed away to be removed.
_TMP_PREFIX = ".tmp-"
_GONE_PREFIX = ".gone-"
#: Attempts at creating a file in a folder that deletes may remove meanwhile.
_FOLDER_RACE_TRIES = 5


class LocalStorage:
    def __init__(self, root: Path, signing_secrets: list[bytes]) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.signer = Signer(signing_secrets)

    # -- paths ------------------------------------------------------------------
    def path_of(self, key: str) -> Path:
        """The file of ``key``; refuses keys that would leave the root."""
        if not key or key.startswith("/") or "\\" in key:
            raise ObjectMissingError(key)
        parts = key.split("/")
        if any(part in ("", ".", "..") or part.startswith(".") for part in parts):
            raise ObjectMissingError(key)
        return self.root.joinpath(*parts)

    def _part_path(self, upload_id: str, part_number: int) -> Path:
        if not upload_id.isalnum():
            raise MultipartError("unknown upload id")
        return self.root / _MULTIPART_DIR / upload_id / f"{part_number:05d}"

    def _write_atomic(
        self, target: Path, chunks: Iterator[bytes], max_bytes: int, make_folders: bool = True
    ) -> int:
        fd, tmp_name = self._temporary_beside(target, make_folders)
        written = 0
        try:
            with os.fdopen(fd, "wb") as handle:
                for chunk in chunks:
                    written += len(chunk)
                    if written > max_bytes:
                        raise ObjectTooLargeError(f"more than {max_bytes} bytes")
                    handle.write(chunk)
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return written

    def _temporary_beside(self, target: Path, make_folders: bool = True) -> tuple[int, str]:
        """A new temporary file in ``target``'s folder, created as needed. A
        delete may remove a folder, emptied, between its creation and the
        file's, or between a parent's creation and its child's (see
        :meth:`_remove_empty_folders`): then they are made again. Without
        ``make_folders`` a missing folder is a ``FileNotFoundError``."""
        tries_left = _FOLDER_RACE_TRIES
        while True:
            try:
                if make_folders:
                    target.parent.mkdir(parents=True, exist_ok=True)
                return tempfile.mkstemp(dir=target.parent, prefix=_TMP_PREFIX)
            except FileNotFoundError:
                tries_left -= 1
                if not make_folders or tries_left == 0:
                    raise

    def _remove_empty_folders(self, folder: Path) -> None:
        """``folder`` and its parents below the root, while they are empty: a
        task's results live in folders of their own (``results/<account>/
        <task>/<attempt>/``), and without this every task left four empty
        folders behind for good, an inode and a block each."""
        while folder != self.root and self.root in folder.parents:
            try:
                folder.rmdir()
            except OSError:  # not empty (or gone): its parents are not empty either
                return
            folder = folder.parent

    # -- objects ------------------------------------------------------------------
    def write_stream(self, key: str, chunks: Iterator[bytes], max_bytes: int) -> int:
        return self._write_atomic(self.path_of(key), chunks, max_bytes)

    def write_exact(self, key: str, chunks: Iterator[bytes], length: int) -> str:
        """Store ``key``'s object of exactly ``length`` bytes, as S3 stores a
        PUT whose link signs its length; returns its ETag (the MD5 of its
        bytes, quoted). A body of any other length is refused before it is
        moved into place: the object already there stays as it was."""
        digest = hashlib.md5(usedforsecurity=False)
        self._write_atomic(self.path_of(key), _exactly(chunks, length, digest), length)
        return f'"{digest.hexdigest()}"'

    def put_file(self, key: str, source: Path) -> int:
        with source.open("rb") as handle:
            return self.write_stream(key, iter(lambda: handle.read(1 << 20), b""), 1 << 62)

    def download_to(self, key: str, destination: Path) -> None:
        path = self.path_of(key)
        if not path.is_file():
            raise ObjectMissingError(key)
        shutil.copyfile(path, destination)

    def read_head(self, key: str, length: int, start: int = 0) -> bytes:
        try:
            with self.path_of(key).open("rb") as handle:
                handle.seek(start)
                return handle.read(length)
        except FileNotFoundError as exc:
            raise ObjectMissingError(key) from exc

    def size(self, key: str) -> int | None:
        try:
            return self.path_of(key).stat().st_size
        except (FileNotFoundError, ObjectMissingError):
            return None

    def delete(self, key: str) -> None:
        """Delete ``key``'s file (gone already is fine). A file the system
        will not delete (permissions, a read-only or failing disk) is a
        ``StorageError``, as the S3 store's refusals are, so that the sweeper
        leaves it for its next pass and goes on."""
        path = self.path_of(key)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"could not delete {key}: {exc.strerror or exc}") from exc
        self._remove_empty_folders(path.parent)

    def delete_prefix(self, prefix: str) -> None:
        folder = self.path_of(prefix.rstrip("/"))
        shutil.rmtree(folder, ignore_errors=True)
        self._remove_empty_folders(folder.parent)

    # -- links ----------------------------------------------------------------------
    def _link(self, base_url: str, claims: LinkClaims, extra: dict[str, str]) -> str:
        query = {
            "method": claims.method,
            "expires": str(claims.expires_at_ms),
            **extra,
            "signature": self.signer.sign(claims),
        }
        return f"{base_url}{LINK_PATH}{quote(claims.key)}?{urlencode(query)}"

    def presign_put(
        self, base_url: str, key: str, content_type: str, max_length: int, expires_at_ms: int
    ) -> str:
        claims = LinkClaims("PUT", key, expires_at_ms, content_type, max_length)
        return self._link(base_url, claims, {"type": content_type, "length": str(max_length)})

    def presign_get(
        self, base_url: str, key: str, expires_at_ms: int, download_name: str | None = None
    ) -> str:
        claims = LinkClaims("GET", key, expires_at_ms, download_name or "")
        extra = {"name": download_name} if download_name else {}
        return self._link(base_url, claims, extra)

    # -- multipart ------------------------------------------------------------------
    def create_multipart(self, key: str) -> str:
        self.path_of(key)  # validates the key
        upload_id = secrets.token_hex(16)
        (self.root / _MULTIPART_DIR / upload_id).mkdir(parents=True)
        return upload_id

    def presign_part(
        self,
        base_url: str,
        key: str,
        upload_id: str,
        part_number: int,
        max_length: int,
        expires_at_ms: int,
    ) -> str:
        claims = LinkClaims("PUT", key, expires_at_ms, "", max_length, upload_id, part_number)
        extra = {"length": str(max_length), "uploadId": upload_id, "partNumber": str(part_number)}
        return self._link(base_url, claims, extra)

    def write_part(
        self, upload_id: str, part_number: int, chunks: Iterator[bytes], length: int
    ) -> str:
        """Store one part of exactly ``length`` bytes, as S3 stores a part whose
        link signs its length; returns its ETag (the MD5 of its bytes, quoted,
        as S3 does). A part of any other length is not kept."""
        if not 1 <= part_number <= MAX_PARTS:
            raise MultipartError("part number out of range")
        path = self._part_path(upload_id, part_number)
        if not path.parent.is_dir():
            raise MultipartError("unknown or finished upload id")
        digest = hashlib.md5(usedforsecurity=False)
        try:
            # Into the upload's own folder only: a completion or abort that
            # removed it meanwhile must not see it made again for a lost part.
            self._write_atomic(path, _exactly(chunks, length, digest), length, make_folders=False)
        except FileNotFoundError:
            raise MultipartError("unknown or finished upload id") from None
        return f'"{digest.hexdigest()}"'

    def _etag_of(self, path: Path) -> str:
        digest = hashlib.md5(usedforsecurity=False)
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()

    def complete_multipart(self, key: str, upload_id: str, parts: list[CompletedPart]) -> int:
        """Join the parts. Once an object is under ``key`` the upload was
        completed: its size is the answer and nothing is joined again, as in
        the S3 backend (a client repeats a completion whose answer it lost)."""
        existing = self.size(key)
        if existing is not None:
            return existing
        folder = self._part_path(upload_id, 1).parent
        if not parts:
            raise MultipartError("no parts given")
        numbers = [part.part_number for part in parts]
        if numbers != sorted(set(numbers)):
            raise MultipartError("parts must be listed in ascending order without repeats")
        try:
            if not folder.is_dir():
                raise MultipartError("unknown or already completed upload id")
            paths = self._checked_parts(upload_id, parts)

            def joined() -> Iterator[bytes]:
                for path in paths:
                    with path.open("rb") as handle:
                        yield from iter(lambda h=handle: h.read(1 << 20), b"")

            size = self.write_stream(key, joined(), 1 << 62)
        except (FileNotFoundError, MultipartError) as exc:
            # A concurrent completion of the same upload joined it first and
            # removed the parts under this one (seen as a part missing, or a
            # file gone mid-read): its object is the answer.
            if (existing := self.size(key)) is not None:
                return existing
            if isinstance(exc, MultipartError):
                raise
            raise MultipartError("unknown or already completed upload id") from None
        try:
            _remove_upload_folder(folder)
        except StorageError as exc:
            # The object is whole under ``key``: the upload was completed, and
            # a 500 would only send the client to repeat what succeeded. The
            # parts stay until the sweeper aborts the upload with its original.
            log.warning("completed %s, but its parts stay for the sweeper: %s", key, exc)
        return size

    def _checked_parts(self, upload_id: str, parts: list[CompletedPart]) -> list[Path]:
        """The listed parts' files, once all are there with their ETags, and
        only then their sizes: a missing part is named as missing, not as
        making its predecessor "too small" for a part that is not last."""
        paths: list[Path] = []
        for part in parts:
            path = self._part_path(upload_id, part.part_number)
            if not path.is_file():
                raise MultipartError(f"part {part.part_number} was not uploaded")
            if self._etag_of(path) != part.etag.strip().strip('"'):
                raise MultipartError(f"part {part.part_number}: ETag does not match")
            paths.append(path)
        for part, path in zip(parts[:-1], paths[:-1], strict=True):
            if path.stat().st_size < MIN_PART_BYTES:
                raise MultipartError(
                    f"part {part.part_number} is smaller than 5 MiB and is not the last part"
                )
        return paths

    def abort_multipart(self, key: str, upload_id: str) -> None:
        """Drop the upload's parts; gone already is fine. A folder the system
        will not remove is a ``StorageError``, as in :meth:`delete`."""
        if upload_id.isalnum():
            _remove_upload_folder(self.root / _MULTIPART_DIR / upload_id)

    # -- leftovers ------------------------------------------------------------------
    def reclaim_leftovers(self, untouched_since: float) -> int:
        """Remove what processes killed mid-write left behind, and return how
        many: temporary files (``.tmp-*``, beside an object or a part) and
        upload folders renamed away to be removed (``.multipart/.gone-*``).
        Nothing else ever removes them, and a temporary file kept its folder
        from being removed once emptied.

        Only what was last modified before ``untouched_since`` (seconds since
        the epoch, the file system's clock) goes: a live write modifies its
        file with every chunk, and every write here copies from local disk
        (spooled bodies, work files, parts), so the caller's bound only has
        to exceed any stall of such a copy. No key can take these names."""
        removed = 0
        multipart = self.root / _MULTIPART_DIR
        for top, folders, files in os.walk(self.root):
            here = Path(top)
            for name in [name for name in folders if name.startswith(_GONE_PREFIX)]:
                # Its contents go with it. A folder just renamed away keeps its
                # old time: removed beside its own process's rmtree, harmless
                # (both ignore what the other took first).
                folders.remove(name)
                if _untouched_since(here / name, untouched_since):
                    shutil.rmtree(here / name, ignore_errors=True)
                    removed += not (here / name).exists()
            stale = [
                name
                for name in files
                if name.startswith(_TMP_PREFIX) and _untouched_since(here / name, untouched_since)
            ]
            removed += sum(_unlink_leftover(here / name) for name in stale)
            # Not an upload's own folder: emptied, it is still a live upload.
            if stale and here != multipart and multipart not in here.parents:
                self._remove_empty_folders(here)
        return removed


def _exactly(chunks: Iterator[bytes], length: int, digest: Any) -> Iterator[bytes]:
    """``chunks``, fed to ``digest`` as they pass, ending in
    ``ObjectTooSmallError`` when they come short of ``length`` bytes (a longer
    body is ``_write_atomic``'s ``ObjectTooLargeError``)."""
    received = 0
    for chunk in chunks:
        received += len(chunk)
        digest.update(chunk)
        yield chunk
    if received < length:
        raise ObjectTooSmallError(f"{received} bytes of {length}")


def _remove_upload_folder(folder: Path) -> None:
    """Remove a multipart upload's folder of parts. Renamed away first, at
    once: a part written while ``rmtree`` went through the folder (after
    its listing) kept it from being removed, answered 200 and stayed; once
    the name is gone, such a part finds no folder and is refused.

    A rename the system refuses (permissions, a read-only or failing disk) is
    a ``StorageError``, which the sweeper logs and retries on its next pass:
    the OS's own error ended the whole pass, every pass, as that upload came
    first again. What ``rmtree`` cannot remove, or a crash interrupts, is
    left for :meth:`LocalStorage.reclaim_leftovers`."""
    gone = folder.with_name(f"{_GONE_PREFIX}{folder.name}-{secrets.token_hex(4)}")
    try:
        os.rename(folder, gone)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StorageError(
            f"could not remove multipart upload {folder.name}: {exc.strerror or exc}"
        ) from exc
    shutil.rmtree(gone, ignore_errors=True)


def _untouched_since(path: Path, since: float) -> bool:
    """Whether ``path`` was last modified before ``since`` (gone: not stale)."""
    try:
        return path.lstat().st_mtime < since
    except FileNotFoundError:
        return False


def _unlink_leftover(path: Path) -> bool:
    """Remove one stale temporary file; one the system refuses is logged and
    left for the next walk (another process may have taken it: not an error)."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        log.warning("could not remove leftover %s: %s", path, exc.strerror or exc)
        return False
    return True
