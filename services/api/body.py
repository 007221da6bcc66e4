"""JSON request bodies, parsed with a nesting limit before any schema sees them.

Python's ``json`` module recurses once per level of nesting, and so do pydantic and ``json.dumps``
of what is stored: a body nested 10,000 deep raised ``RecursionError`` (a 500), in ``metadata``
and ``response_format.json_schema`` too. Loupe's own request shapes nest about six levels and a
client's JSON schema rarely twenty, so bodies may nest objects and arrays up to
:data:`MAX_JSON_DEPTH` levels; deeper is a 400 ``invalid_json``. Strict JSON only: ``NaN`` and
``Infinity`` are refused as well, since nothing stored may carry them back out as invalid JSON.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Request

from services.errors import BadRequest

#: The deepest nesting of objects and arrays a body may have (a bare ``{}`` is depth 1).
MAX_JSON_DEPTH = 64


def json_body(request: Request) -> Any:
    """The request's body parsed by :func:`loads_json` (the body's size is capped by Flask)."""
    return loads_json(request.get_data(cache=True))


def loads_json(raw: bytes | str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``raw`` parsed as strict JSON (UTF-8, -16 or -32), or ``BadRequest`` with code
    ``invalid_json`` when it is not JSON or nests deeper than ``max_depth``."""
    try:
        value = json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise _too_deep(max_depth) from None
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise BadRequest("The body is not valid JSON.", code="invalid_json") from None
    if _deeper_than(value, max_depth):
        raise _too_deep(max_depth)
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _too_deep(max_depth: int) -> BadRequest:
    return BadRequest(
        f"The JSON body nests objects and arrays deeper than {max_depth} levels.",
        code="invalid_json",
    )


def _deeper_than(value: Any, max_depth: int) -> bool:
    """Whether ``value`` nests containers deeper than ``max_depth``; iterative, so any depth the
    parser returned is walked without recursion."""
    pending: list[tuple[Any, int]] = [(value, 1)] if isinstance(value, dict | list) else []
    while pending:
        node, depth = pending.pop()
        children = node.values() if isinstance(node, dict) else node
        if depth > max_depth:
            return True
        pending.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False
