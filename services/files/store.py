"""``files`` rows: who uploaded which content-addressed image, and when."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Engine, and_, delete, insert, or_, select
from sqlalchemy.engine import RowMapping

from services.db.schema import files
from services.db.session import reading, writing
from services.types import ImageRef


@dataclass(frozen=True)
class StoredFile:
    id: str
    owner_id: str
    filename: str | None
    image: ImageRef
    created_at: datetime


class FileStore(Protocol):
    def insert(self, file: StoredFile) -> None: ...
    def get(self, file_id: str) -> StoredFile | None: ...
    def list_for_owner(
        self, owner_id: str, limit: int, after: StoredFile | None
    ) -> list[StoredFile]: ...
    def delete(self, file_id: str) -> bool: ...
    def created_before(self, cutoff: datetime, limit: int) -> list[StoredFile]: ...
    def image_in_use(self, sha256: str, excluding: Collection[str] = ()) -> bool: ...


class SqlFileStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def insert(self, file: StoredFile) -> None:
        with writing(self._engine) as conn:
            conn.execute(insert(files).values(**_file_values(file)))

    def get(self, file_id: str) -> StoredFile | None:
        with reading(self._engine) as conn:
            row = conn.execute(select(files).where(files.c.id == file_id)).mappings().first()
        return None if row is None else _row_to_file(row)

    def list_for_owner(
        self, owner_id: str, limit: int, after: StoredFile | None
    ) -> list[StoredFile]:
        """Newest first; ``after``: continue below that file (same owner)."""
        query = select(files).where(files.c.owner_id == owner_id)
        if after is not None:
            query = query.where(
                or_(
                    files.c.created_at < after.created_at,
                    and_(files.c.created_at == after.created_at, files.c.id < after.id),
                )
            )
        query = query.order_by(files.c.created_at.desc(), files.c.id.desc()).limit(limit)
        with reading(self._engine) as conn:
            return [_row_to_file(row) for row in conn.execute(query).mappings()]

    def delete(self, file_id: str) -> bool:
        with writing(self._engine) as conn:
            return conn.execute(delete(files).where(files.c.id == file_id)).rowcount == 1

    def created_before(self, cutoff: datetime, limit: int) -> list[StoredFile]:
        with reading(self._engine) as conn:
            rows = conn.execute(
                select(files)
                .where(files.c.created_at < cutoff)
                .order_by(files.c.created_at)
                .limit(limit)
            ).mappings()
            return [_row_to_file(row) for row in rows]

    def image_in_use(self, sha256: str, excluding: Collection[str] = ()) -> bool:
        """Whether a file outside ``excluding`` keeps this image."""
        query = select(files.c.id).where(files.c.sha256 == sha256)
        if excluding:
            query = query.where(files.c.id.not_in(list(excluding)))
        with reading(self._engine) as conn:
            return conn.execute(query.limit(1)).first() is not None


# A files row is a StoredFile with its ImageRef's fields flattened in; fields and columns share
# names, so the mapping both ways is derived from the dataclasses.
_OWN_FIELDS = tuple(f.name for f in fields(StoredFile) if f.name != "image")
_IMAGE_FIELDS = tuple(f.name for f in fields(ImageRef))


def _file_values(file: StoredFile) -> dict[str, Any]:
    return {name: getattr(file, name) for name in _OWN_FIELDS} | file.image.to_json()


def _row_to_file(row: RowMapping) -> StoredFile:
    image = ImageRef(**{name: row[name] for name in _IMAGE_FIELDS})
    return StoredFile(image=image, **{name: row[name] for name in _OWN_FIELDS})
