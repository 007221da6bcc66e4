"""The OpenAPI 3.1 document, built from a table of operations and the code's pydantic models.

Each :class:`Operation` states a route's method and path, its parameters, its request body (a
pydantic model, or a JSON schema derived from one) and every answer it can give. Answers every
route of its kind gives are added here, once: 401 for routes that take a key, 403 for admin
routes, 404 where the path names an object, 400/413/415/422 where a body is read, 422 where a
query is parsed, and the front proxy's 414 and 431 where a request line or header can grow.
JSON Schema 2020-12 is OpenAPI 3.1's own dialect, so pydantic's schemas go in as they are, their
``$defs`` moved to ``components/schemas``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from services.api.responses import Error

REF = "#/components/schemas/{model}"
JSON = "application/json"
Schema = dict[str, Any]
Body = type[BaseModel] | tuple[type[BaseModel], ...] | Schema  # a tuple: one of the models


class Access(enum.Enum):
    PUBLIC = "public"  # no key
    KEY = "key"  # any API key
    ADMIN = "admin"  # an admin key
    METRICS = "metrics"  # the metrics token, when one is configured


@dataclass(frozen=True)
class Param:
    """A query, header or path parameter."""

    name: str
    where: str  # "query", "header" or "path"
    schema: Schema
    description: str = ""
    required: bool = False
    style: str | None = None  # e.g. "deepObject" for metadata[key]=value


@dataclass(frozen=True)
class Answer:
    """One status an operation can answer, with its body and headers."""

    status: int
    description: str
    body: Body | None = Error
    media_type: str = JSON
    headers: tuple[str, ...] = ()  # names in RESPONSE_HEADERS
    links: Mapping[str, Schema] = field(default_factory=dict)
    also: tuple[str, ...] = ()  # other media types the answer may have (a text body)


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # OpenAPI's form: /v1/jobs/{job_id}
    operation_id: str
    summary: str
    tag: str
    access: Access
    answers: tuple[Answer, ...]
    body: Mapping[str, Body] = field(default_factory=dict)  # media type -> schema
    params: tuple[Param, ...] = ()
    body_required: bool = True


#: Response headers the document describes, by name.
RESPONSE_HEADERS: dict[str, Schema] = {
    name: {"description": text, "schema": {"type": "string"}}
    for name, text in (
        ("Location", "Where the job (or file) can be fetched."),
        ("Idempotent-Replayed", "true when an earlier submit's job is returned."),
        ("Preference-Applied", "wait=N when the request waited."),
        ("Retry-After", "Seconds to wait before retrying."),
        ("x-should-retry", "Whether retrying the request can help."),
        ("Content-Disposition", "A CSV download's file name."),
        (
            "RateLimit-Limit",
            "Submissions per 60-second window: the key's requests_per_minute, else the "
            "deployment's default (absent only where that is 0, or Redis cannot say).",
        ),
        ("RateLimit-Remaining", "Submissions left in this window."),
        ("RateLimit-Reset", "Seconds until the window ends."),
        ("RateLimit-Policy", "The quota policy, e.g. 60;w=60."),
    )
}
#: On every authenticated answer (services/api/ratelimit.py).
RATE_LIMIT_HEADERS = (
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "RateLimit-Policy",
)

_ID_PATTERN = "^[A-Za-z0-9_-]{1,64}$"  # services.api.app._refuse_odd_ids: others are a 404


def path_id(name: str) -> Param:
    """An object id in the path; one no id could look like is a 404."""
    return Param(name, "path", {"type": "string", "pattern": _ID_PATTERN}, required=True)


def query_params(model: type[BaseModel]) -> tuple[Param, ...]:
    """One query parameter per field of ``model``; each schema carries the model's ``$defs``,
    which the document moves to its components. An object field is written ``name[key]=value``
    (OpenAPI's deepObject style)."""
    schema = model.model_json_schema(ref_template=REF)
    defs = schema.pop("$defs", {})
    required = set(schema.get("required", ()))
    return tuple(
        Param(
            name, "query", prop | {"$defs": defs}, prop.get("description", ""), name in required,
            "deepObject" if prop.get("type") == "object" else None,
        )
        for name, prop in schema["properties"].items()
    )  # fmt: skip


def _implied_answers(op: Operation) -> list[Answer]:
    implied = []
    if op.access in (Access.KEY, Access.ADMIN, Access.METRICS):
        implied.append(Answer(401, "No key, or not a valid one."))
    if op.access is Access.ADMIN:
        implied.append(Answer(403, "The key is not an admin key."))
    if any(p.where == "path" for p in op.params):
        implied.append(Answer(404, "No such object for this key."))
    if op.body:
        implied += [
            Answer(400, "The body is not valid JSON, or nests too deep."),
            Answer(413, "The body is larger than the server accepts."),
            Answer(415, "The body's media type is not one of those accepted."),
        ]
    if op.body or any(p.where in ("query", "header") for p in op.params):
        implied.append(Answer(422, "A parameter or field is invalid."))
    # The front proxy's limits (infra/nginx): a request line over 8 KB, a header line over 8 KB.
    if any(p.where in ("query", "path") for p in op.params):
        implied.append(Answer(414, "The request line is longer than the proxy accepts."))
    if any(p.where == "header" for p in op.params):
        implied.append(Answer(431, "A header is larger than the proxy accepts."))
    return implied


def _answers(op: Operation) -> list[Answer]:
    """The operation's answers plus the implied ones it does not state itself."""
    stated = {a.status for a in op.answers}
    return [*op.answers, *(a for a in _implied_answers(op) if a.status not in stated)]


class _Schemas:
    """Collects component schemas; a model is named by its class name."""

    def __init__(self) -> None:
        self.components: dict[str, Schema] = {}

    def ref(self, body: Body) -> Schema:
        if isinstance(body, tuple):
            return {"oneOf": [self.ref(model) for model in body]}
        if isinstance(body, dict):
            defs = body.get("$defs", {})
            self.components.update(defs)
            return {k: v for k, v in body.items() if k != "$defs"}
        schema = body.model_json_schema(ref_template=REF)
        self.components.update(schema.pop("$defs", {}))
        self.components[body.__name__] = schema
        return {"$ref": REF.format(model=body.__name__)}


def _response(answer: Answer, schemas: _Schemas, keyed: bool) -> Schema:
    out: Schema = {"description": answer.description}
    if answer.body is not None:
        out["content"] = {answer.media_type: {"schema": schemas.ref(answer.body)}}
    elif answer.media_type != JSON:
        out["content"] = {answer.media_type: {"schema": {"type": "string"}}}
    for media_type in answer.also:
        out["content"][media_type] = {"schema": {"type": "string"}}
    names = (*answer.headers, *(RATE_LIMIT_HEADERS if keyed else ()))
    if names:
        out["headers"] = {name: RESPONSE_HEADERS[name] for name in names}
    if answer.links:
        out["links"] = dict(answer.links)
    return out


def _parameter(param: Param, schemas: _Schemas) -> Schema:
    out: Schema = {"name": param.name, "in": param.where, "schema": schemas.ref(param.schema)}
    if param.required:
        out["required"] = True
    if param.description:
        out["description"] = param.description
    if param.style is not None:
        out |= {"style": param.style, "explode": True}
    return out


_SECURITY: dict[Access, list[dict[str, list[str]]]] = {
    Access.PUBLIC: [],
    Access.KEY: [{"apiKey": []}],
    Access.ADMIN: [{"apiKey": []}],
    Access.METRICS: [{}, {"metricsToken": []}],  # open unless LOUPE_METRICS_TOKEN is set
}


def _operation(op: Operation, schemas: _Schemas) -> Schema:
    out: Schema = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": [op.tag],
        "security": _SECURITY[op.access],
    }
    if op.params:
        out["parameters"] = [_parameter(p, schemas) for p in op.params]
    if op.body:
        content = {media: {"schema": schemas.ref(body)} for media, body in op.body.items()}
        out["requestBody"] = {"required": op.body_required, "content": content}
    answers = sorted(_answers(op), key=lambda a: a.status)
    keyed = op.access in (Access.KEY, Access.ADMIN)
    out["responses"] = {str(a.status): _response(a, schemas, keyed) for a in answers}
    return out


def build_document(operations: Iterable[Operation], version: str) -> Schema:
    """The OpenAPI 3.1 document of ``operations``."""
    schemas = _Schemas()
    paths: dict[str, Schema] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Loupe API",
            "version": version,
            "description": "Asynchronous image-analysis jobs for vision-language models. "
            'Every error is JSON: {"error": {"code", "message"}}.',
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.components.items())),
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "An API key."},
                "metricsToken": {"type": "http", "scheme": "bearer"},
            },
        },
    }
