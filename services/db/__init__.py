"""SQL access: engine construction and migrations (SQLite by default, PostgreSQL in production)."""

from services.db.engine import make_engine, normalize_url, session_factory
from services.db.migrate import upgrade_to_head

__all__ = ["make_engine", "normalize_url", "session_factory", "upgrade_to_head"]
