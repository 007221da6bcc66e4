"""A named lease in SQL: one holder at a time, renewed while it lives, taken over once lapsed.

It elects the active dispatcher among any number of instances without anything but the
database they already share. Safety never rests on it: every dispatch is a compare-and-set, so
two dispatchers that both believe they lead (a paused process waking up) never hand one job
out twice; the lease only keeps them from working against each other.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, insert, or_, update
from sqlalchemy.exc import IntegrityError

from services.db.schema import service_leases
from services.db.session import writing


class SqlLeases:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def hold(self, name: str, holder: str, now: datetime, ttl: timedelta) -> bool:
        """Take or renew ``name`` for ``holder`` until ``now + ttl``; False if another holds
        it and its lease has not lapsed."""
        row = service_leases.c
        with writing(self._engine) as conn:
            result = conn.execute(
                update(service_leases)
                .where(row.name == name, or_(row.holder == holder, row.expires_at < now))
                .values(holder=holder, expires_at=now + ttl)
            )
        return result.rowcount == 1 or self._create(name, holder, now + ttl)

    def _create(self, name: str, holder: str, until: datetime) -> bool:
        """The first holder ever of ``name``; False if another created it first."""
        try:
            with writing(self._engine) as conn:
                conn.execute(
                    insert(service_leases).values(name=name, holder=holder, expires_at=until)
                )
        except IntegrityError:
            return False
        return True

    def release(self, name: str, holder: str) -> None:
        """Give ``name`` up at once (a clean shutdown), so a standby need not wait it out."""
        with writing(self._engine) as conn:
            conn.execute(
                delete(service_leases).where(
                    service_leases.c.name == name, service_leases.c.holder == holder
                )
            )
