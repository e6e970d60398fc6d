"""Alembic environment: uses the caller's connection when given one."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from upscayl_cloud.db.tables import metadata

config = context.config


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=metadata)
        with context.begin_transaction():
            context.run_migrations()
        if connection.in_transaction():
            connection.commit()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=metadata)
        with context.begin_transaction():
            context.run_migrations()


run()
