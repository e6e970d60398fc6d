"""Object storage: ``base.py`` is the contract, one file per backend."""

from __future__ import annotations

from upscayl_cloud.config import Settings, StorageBackend
from upscayl_cloud.storage.base import ObjectStorage


def build_storage(settings: Settings) -> ObjectStorage:
    """The configured backend (a closed choice, resolved once at startup)."""
    if settings.storage_backend is StorageBackend.local:
        from upscayl_cloud.storage.local import LocalStorage

        return LocalStorage(settings.resolved_storage_dir, settings.signing_secrets())
    raise ValueError(f"unsupported storage backend: {settings.storage_backend}")
