"""Request bodies of the admin key endpoints (``/v1/admin/keys``), as pydantic models so the
OpenAPI document can describe them. Numbers are numbers (no ``true`` for 1), names carry no
control characters, times carry a timezone."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, ValidationError

from services.api.schemas import Name
from services.auth.keys import Role
from services.errors import InvalidInput

M = TypeVar("M", bound=BaseModel)

Limit = Annotated[StrictInt, Field(ge=0, le=2**31 - 1)]
"""A count limit; ``null`` in a body means unlimited."""
Money = Annotated[str, Field(pattern=r"^\d{1,12}(\.\d{1,10})?$")]
"""USD as a decimal string, e.g. ``"10.00"`` (as every amount in the API is written)."""


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("give a timezone, e.g. 2027-01-01T00:00:00Z")
    return value.astimezone(UTC)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateKeyRequest(_Strict):
    """``POST /v1/admin/keys``: a key for ``name``; it never expires unless ``expires_at``."""

    name: Annotated[Name, Field(min_length=1, max_length=200)]
    role: Role = Role.USER
    expires_at: Annotated[datetime, AfterValidator(_aware)] | None = None


class QuotaChange(_Strict):
    """``PATCH /v1/admin/keys/{key_id}/quota``: the limits given change (``null``: no limit),
    the others keep their value."""

    monthly_spend_usd: Money | None = None
    max_queued: Limit | None = None
    max_running: Limit | None = None
    max_concurrency: Limit | None = None
    requests_per_minute: Limit | None = None

    def changes(self) -> dict[str, Any]:
        """The fields the body named, with spend as a ``Decimal``."""
        named = {name: getattr(self, name) for name in self.model_fields_set}
        if named.get("monthly_spend_usd") is not None:
            named["monthly_spend_usd"] = Decimal(named["monthly_spend_usd"])
        return named


def parse_body(model: type[M], data: Any) -> M:
    """``data`` as ``model``, or 422 ``invalid_parameter`` naming the first few faults."""
    if not isinstance(data, dict):
        raise InvalidInput("The body must be a JSON object.", code="invalid_parameter")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        faults = [f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:5]]
        raise InvalidInput("; ".join(faults), code="invalid_parameter") from None
