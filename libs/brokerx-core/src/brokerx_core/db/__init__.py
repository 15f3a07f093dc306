"""Database layer: declarative base, models, engine/session factories, migrations."""

from brokerx_core.db.base import Base, utcnow
from brokerx_core.db.session import create_engine, create_sessionmaker

__all__ = ["Base", "create_engine", "create_sessionmaker", "utcnow"]
