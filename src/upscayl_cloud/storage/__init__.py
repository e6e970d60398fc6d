"""Object storage: ``base.py`` is the contract, one file per backend."""

from __future__ import annotations

from upscayl_cloud.config import Settings, StorageBackend
from upscayl_cloud.storage.base import ObjectStorage, StorageError


def build_storage(settings: Settings) -> ObjectStorage:
    """The configured backend (a closed choice, resolved once at startup)."""
    if settings.storage_backend is StorageBackend.local:
        from upscayl_cloud.storage.local import LocalStorage

        return LocalStorage(settings.resolved_storage_dir, settings.signing_secrets())
    if settings.storage_backend is StorageBackend.s3:
        return _build_s3(settings)
    raise ValueError(f"unsupported storage backend: {settings.storage_backend}")


def _build_s3(settings: Settings) -> ObjectStorage:
    """One thread-safe client for the service's own calls, and a second one
    signing the links clients get when they reach the store at another host.

    A client botocore refuses to build (a region, an endpoint or credentials
    it cannot use) is a :class:`StorageError`, which a command's start says
    in one line, not a traceback of 150."""
    from botocore.client import BaseClient
    from botocore.exceptions import BotoCoreError

    from upscayl_cloud.storage.s3 import S3Storage
    from upscayl_cloud.storage.s3client import make_client

    def client(endpoint: str) -> BaseClient:
        try:
            return make_client(
                endpoint or None,
                settings.s3_region,
                settings.s3_access_key_id or None,
                settings.s3_secret_access_key.get_secret_value() or None,
                settings.s3_addressing_style.value,
                connect_timeout=settings.s3_connect_timeout_seconds,
                read_timeout=settings.s3_read_timeout_seconds,
                max_attempts=settings.s3_max_attempts,
            )
        except (BotoCoreError, ValueError) as exc:
            raise StorageError(f"cannot build an S3 client: {exc}") from exc

    public = settings.s3_public_endpoint_url
    storage = S3Storage(
        client(settings.s3_endpoint_url),
        settings.s3_bucket,
        presign_client=client(public) if public else None,
        part_bytes=settings.multipart_part_bytes,
    )
    if settings.s3_create_bucket:
        storage.ensure_bucket()
    return storage
