"""Alembic environment: the URL comes from mjq's config (or the caller), the metadata from app.models."""
from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool

from app.db import Base
from app import models, models_tenancy  # noqa: F401  - registers the tables on Base.metadata
from config import Settings

config = context.config
url = config.get_main_option("sqlalchemy.url") or Settings.from_env().effective_database_url
config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True,
                      render_as_batch=url.startswith("sqlite"))
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = engine_from_config(config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.",
                                     poolclass=pool.NullPool)
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata,
                          render_as_batch=url.startswith("sqlite"))
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
