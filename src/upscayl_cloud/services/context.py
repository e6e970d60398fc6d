"""The collaborators every use case needs, built once by the composition root."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from upscayl_cloud.config import Settings
from upscayl_cloud.db.engine import make_engine
from upscayl_cloud.db.migrate import upgrade
from upscayl_cloud.storage import build_storage
from upscayl_cloud.storage.base import ObjectStorage


@dataclass(frozen=True)
class Context:
    settings: Settings
    db: Engine
    storage: ObjectStorage


def build_context(settings: Settings, *, migrate: bool = True) -> Context:
    """Data directory, database (migrated to head) and storage, ready to use."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = make_engine(settings.resolved_database_url)
    if migrate:
        upgrade(db)
    return Context(settings=settings, db=db, storage=build_storage(settings))
