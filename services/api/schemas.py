"""Request parsing: OpenAI chat-completions JSON and multipart forms → ``SubmitCommand``.

Both forms obey the same rules. Numbers are numbers: JSON ``true`` is not 1, nor ``"5"`` 5, and
a flag is ``true`` or ``false`` (multipart fields are text, parsed to the field's type first).
No string that is stored may hold a control character or a lone surrogate (prompt text, system
text and stop sequences may hold tab, CR and LF): they would reach logs, webhook headers and
the tokenizer as they came.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
    field_validator,
)

from services.api.body import loads_json
from services.clock import parse_rfc3339
from services.errors import BadRequest, InvalidInput
from services.jobs.service import ImageSource, RemoteImage, SubmitCommand, UploadedImage
from services.jobs.store import Cursor, JobFilter
from services.types import ContentPart, JobStatus, Message, Priority, SamplingParams

_DATA_URL = re.compile(
    r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*);base64,"
)


# Control characters (C0, DEL, C1) and lone surrogates; text may keep tab, LF and CR.
_UNCLEAN = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_UNCLEAN_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def _clean(value: str) -> str:
    if _UNCLEAN.search(value):
        raise ValueError("must not contain control characters or lone surrogates")
    return value


def _clean_text(value: str) -> str:
    if _UNCLEAN_TEXT.search(value):
        raise ValueError("must not contain control characters (but tab, CR, LF) or lone surrogates")
    return value


def _not_a_bool(value: Any) -> Any:
    """JSON ``true`` and ``false`` are not the numbers 1 and 0 (Python's bool is an int)."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not true or false")
    return value


def _only_false(value: Any) -> Any:
    """``stream`` is false or absent: 0 is not false."""
    if value is not False:
        raise ValueError("only false is accepted")
    return value


Name = Annotated[str, AfterValidator(_clean)]  # identifiers, URLs, metadata: no controls at all
Text = Annotated[str, AfterValidator(_clean_text)]  # prompt text: tab, CR and LF allowed


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


class ImageUrl(_Strict):
    url: Name = Field(min_length=1)
    detail: Literal["auto", "low", "high"] | None = None


class TextPart(_Strict):
    type: Literal["text"]
    text: Text


class ImagePart(_Strict):
    type: Literal["image_url"]
    image_url: ImageUrl


class ImageFile(_Strict):
    file_id: Name = Field(min_length=1, max_length=40)


class ImageFilePart(_Strict):
    """An image uploaded earlier with ``POST /v1/files`` (the Assistants API's part shape)."""

    type: Literal["image_file"]
    image_file: ImageFile


Part = Annotated[TextPart | ImagePart | ImageFilePart, Field(discriminator="type")]


class ChatMessage(_Strict):
    role: Literal["system", "user", "assistant"]
    content: Text | list[Part]
    name: Name | None = None


class JsonSchemaSpec(_Strict):
    name: Name = Field(min_length=1, max_length=64)
    schema_: dict[str, Any] = Field(alias="schema")
    description: Text | None = None
    strict: StrictBool | None = None

    @field_validator("schema_")
    @classmethod
    def _check_strings(cls, value: dict[str, Any]) -> dict[str, Any]:
        """Every key and string in the schema is clean text (the body's depth is bounded)."""
        pending: list[Any] = [value]
        while pending:
            node = pending.pop()
            if isinstance(node, str):
                _clean_text(node)
            elif isinstance(node, dict):
                pending.extend(node.keys())
                pending.extend(node.values())
            elif isinstance(node, list):
                pending.extend(node)
        return value


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None

    def to_params(self) -> dict[str, Any] | None:
        if self.type == "text":
            return None
        if self.type == "json_object":
            return {"type": "json_object"}
        if self.json_schema is None:
            raise InvalidInput(
                "response_format of type json_schema needs a json_schema object.",
                code="invalid_parameter",
            )
        return {"type": "json_schema", "schema": self.json_schema.schema_}


class Sampling(_Strict):
    """Sampling options shared by the JSON and multipart forms, with OpenAI/vLLM ranges."""

    max_tokens: StrictInt | None = Field(default=None, ge=1)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1)
    temperature: StrictFloat | None = Field(default=None, ge=0.0, le=2.0)
    top_p: StrictFloat | None = Field(default=None, gt=0.0, le=1.0)
    top_k: StrictInt | None = Field(default=None, ge=-1)
    min_p: StrictFloat | None = Field(default=None, ge=0.0, le=1.0)
    stop: Text | list[Text] | None = None
    seed: StrictInt | None = Field(default=None, ge=0, le=2**63 - 1)
    presence_penalty: StrictFloat | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: StrictFloat | None = Field(default=None, ge=-2.0, le=2.0)
    repetition_penalty: StrictFloat | None = Field(default=None, gt=0.0, le=2.0)
    ignore_eos: StrictBool = False
    timeout_seconds: StrictInt | None = Field(default=None, ge=1)
    metadata: dict[Name, Name] | None = None
    priority: Priority = Priority.NORMAL
    ttl_seconds: StrictInt | None = Field(default=None, ge=1)
    webhook: Name | None = Field(default=None, min_length=1, max_length=2048)
    webhook_events_filter: list[Literal["start", "completed"]] | None = Field(
        default=None, min_length=1
    )

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        items = [value] if isinstance(value, str) else (value or [])
        if len(items) > 4:
            raise ValueError("at most 4 stop sequences")
        if any(not s or len(s) > 128 for s in items):
            raise ValueError("stop sequences must be 1 to 128 characters")
        return value

    @field_validator("metadata")
    @classmethod
    def _check_metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None and (
            len(value) > 16 or any(len(k) > 64 or len(v) > 512 for k, v in value.items())
        ):
            raise ValueError("at most 16 keys; keys up to 64 and values up to 512 characters")
        return value

    def webhook_options(self) -> dict[str, Any]:
        """``SubmitCommand`` webhook fields; a filter without a webhook is a 422."""
        if self.webhook is None:
            if self.webhook_events_filter is not None:
                raise InvalidInput(
                    "webhook_events_filter needs a webhook URL.", code="invalid_parameter"
                )
            return {}
        events = tuple(dict.fromkeys(self.webhook_events_filter or ["completed"]))
        return {"webhook": self.webhook, "webhook_events_filter": events}

    def sampling_params(self) -> SamplingParams:
        stop = self.stop
        return SamplingParams(
            max_tokens=self.max_tokens
            if self.max_tokens is not None
            else self.max_completion_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            min_p=self.min_p,
            stop=(stop,) if isinstance(stop, str) else tuple(stop or ()),
            seed=self.seed,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            repetition_penalty=self.repetition_penalty,
            ignore_eos=self.ignore_eos,
        )


class ChatJobRequest(Sampling):
    model: Name | None = Field(default=None, min_length=1, max_length=200)  # None: the default
    messages: list[ChatMessage] = Field(min_length=1, max_length=64)
    response_format: ResponseFormat | None = None
    n: Annotated[Literal[1], BeforeValidator(_not_a_bool)] | None = None
    stream: Annotated[Literal[False], BeforeValidator(_only_false)] | None = None
    user: Name | None = Field(default=None, max_length=256)


class FormJobRequest(Sampling):
    model: Name = Field(min_length=1, max_length=200)
    prompt: Text = Field(min_length=1)
    system: Text | None = None


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        location = ".".join(str(p) for p in error["loc"]) or "body"
        parts.append(f"{location}: {error['msg']}")
    return "; ".join(parts)


def _parse(model: type[_Strict], data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(_validation_message(exc), code="invalid_parameter") from None


def image_source(url: str) -> bytes | RemoteImage:
    """An ``image_url``: the bytes of a base64 ``data:`` URL, or an http(s) URL to fetch."""
    match = _DATA_URL.match(url)
    if match is None:
        if url.startswith(("http://", "https://")):
            return RemoteImage(url)
        raise InvalidInput(
            "image_url.url must be an https:// URL or a data:image/...;base64,... URL.",
            code="invalid_image_url",
        )
    try:
        return base64.b64decode(url[match.end() :], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("image_url.url is not valid base64.", code="invalid_image_url") from None


def _convert_messages(
    messages: list[ChatMessage],
) -> tuple[tuple[Message, ...], tuple[ImageSource, ...]]:
    converted: list[Message] = []
    images: list[ImageSource] = []
    for message in messages:
        if isinstance(message.content, str):
            parts: tuple[ContentPart, ...] = (ContentPart(type="text", text=message.content),)
        else:
            items: list[ContentPart] = []
            for part in message.content:
                if isinstance(part, TextPart):
                    items.append(ContentPart(type="text", text=part.text))
                else:
                    if message.role != "user":
                        raise InvalidInput(
                            "Images are only accepted in user messages.", code="invalid_parameter"
                        )
                    items.append(ContentPart(type="image", image_index=len(images)))
                    if isinstance(part, ImageFilePart):
                        images.append(UploadedImage(part.image_file.file_id))
                    else:
                        images.append(image_source(part.image_url.url))
            parts = tuple(items)
        if not parts:
            raise InvalidInput("A message needs content.", code="invalid_parameter")
        converted.append(Message(role=message.role, content=parts))
    if not any(m.role == "user" for m in converted):
        raise InvalidInput("messages needs at least one user message.", code="invalid_parameter")
    return tuple(converted), tuple(images)


def parse_json_job(body: Any, owner_id: str, default_model: str) -> SubmitCommand:
    if not isinstance(body, dict):
        raise BadRequest("The JSON body must be an object.", code="invalid_json")
    request: ChatJobRequest = _parse(ChatJobRequest, body)
    messages, images = _convert_messages(request.messages)
    return SubmitCommand(
        owner_id=owner_id,
        model=request.model or default_model,
        messages=messages,
        images=images,
        params=dataclasses.replace(
            request.sampling_params(),
            response_format=request.response_format.to_params()
            if request.response_format
            else None,
        ),
        timeout_seconds=request.timeout_seconds,
        metadata=request.metadata or {},
        priority=request.priority,
        ttl_seconds=request.ttl_seconds,
        **request.webhook_options(),
    )


# Multipart fields are text: each becomes its field's type here, so the model's strict number and
# flag types hold for both forms. Text that does not parse is left for the model to refuse.
_FORM_INT = re.compile(r"[+-]?[0-9]{1,19}")  # ASCII digits only, and never int()'s digit limit
_FORM_FLOAT = re.compile(
    r"[+-]?(?:[0-9]{1,30}\.?[0-9]{0,30}|\.[0-9]{1,30})(?:[eE][+-]?[0-9]{1,3})?"
)
_FORM_BOOLS = dict.fromkeys(("true", "t", "yes", "y", "on", "1"), True) | dict.fromkeys(
    ("false", "f", "no", "n", "off", "0"), False
)  # pydantic's words for true and false


def _form_int(text: str) -> int | str:
    return int(text) if _FORM_INT.fullmatch(text) else text


def _form_float(text: str) -> float | str:
    return float(text) if _FORM_FLOAT.fullmatch(text) else text


def _form_bool(text: str) -> bool | str:
    return _FORM_BOOLS.get(text.lower(), text)


def _form_text(text: str) -> str:
    return text


_FORM_SCALARS: dict[str, Callable[[str], Any]] = {
    "model": _form_text, "prompt": _form_text, "system": _form_text, "priority": _form_text,
    "webhook": _form_text, "max_tokens": _form_int, "max_completion_tokens": _form_int,
    "top_k": _form_int, "seed": _form_int, "timeout_seconds": _form_int, "ttl_seconds": _form_int,
    "temperature": _form_float, "top_p": _form_float, "min_p": _form_float,
    "presence_penalty": _form_float, "frequency_penalty": _form_float,
    "repetition_penalty": _form_float, "ignore_eos": _form_bool,
}  # fmt: skip
_FORM_LISTS = {"stop", "webhook_events_filter", "file_id"}


def parse_form_job(
    form: Mapping[str, list[str]], files: Mapping[str, list[bytes]], owner_id: str, model: str
) -> SubmitCommand:
    """Multipart: ``image`` file(s) and/or ``file_id`` (uploaded files), ``prompt``, optional
    model and sampling fields."""
    unknown = set(form) - set(_FORM_SCALARS) - _FORM_LISTS
    unknown |= set(files) - {"image"}
    if unknown:
        raise InvalidInput(
            f"Unknown form fields: {', '.join(sorted(unknown))}.", code="invalid_parameter"
        )
    data = {k: _FORM_SCALARS[k](v[-1]) for k, v in form.items() if k in _FORM_SCALARS}
    data.setdefault("model", model)
    for name in (_FORM_LISTS - {"file_id"}) & set(form):
        data[name] = form[name]
    request: FormJobRequest = _parse(FormJobRequest, data)
    uploaded = [UploadedImage(file_id) for file_id in form.get("file_id", []) if file_id]
    images: tuple[ImageSource, ...] = (*files.get("image", []), *uploaded)
    content = [ContentPart(type="image", image_index=i) for i in range(len(images))]
    content.append(ContentPart(type="text", text=request.prompt))
    messages: list[Message] = []
    if request.system:
        messages.append(Message(role="system", content=(ContentPart("text", request.system),)))
    messages.append(Message(role="user", content=tuple(content)))
    return SubmitCommand(
        owner_id=owner_id,
        model=request.model,
        messages=tuple(messages),
        images=images,
        params=request.sampling_params(),
        timeout_seconds=request.timeout_seconds,
        metadata={},
        priority=request.priority,
        ttl_seconds=request.ttl_seconds,
        **request.webhook_options(),
    )


def form_job_schema(ref_template: str) -> dict[str, Any]:
    """The multipart form :func:`parse_form_job` reads, as a JSON schema: the fields of
    ``FormJobRequest`` it takes from the form (``model`` defaults), ``image`` files and
    ``file_id`` values; other fields are refused."""
    schema = FormJobRequest.model_json_schema(ref_template=ref_template)
    fields = set(_FORM_SCALARS) | _FORM_LISTS
    properties = {k: v for k, v in schema["properties"].items() if k in fields}
    properties["image"] = {"type": "array", "items": {"type": "string", "format": "binary"}}
    properties["file_id"] = {
        "type": "array",
        "items": ImageFile.model_json_schema()["properties"]["file_id"],
    }
    return {
        "type": "object",
        "properties": properties,
        "required": ["prompt"],
        "additionalProperties": False,
        "$defs": schema.get("$defs", {}),
    }


_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


def parse_idempotency_key(value: str | None) -> str | None:
    """The ``Idempotency-Key`` header: 1 to 255 visible ASCII characters, or absent."""
    if value is None:
        return None
    if not _IDEMPOTENCY_KEY.match(value):
        raise InvalidInput(
            "Idempotency-Key must be 1 to 255 visible ASCII characters.",
            code="invalid_idempotency_key",
        )
    return value


def _rfc3339_text(value: Any) -> Any:
    """Query text must be an RFC 3339 date-time (pydantic alone reads ``0.5`` as 1970)."""
    return parse_rfc3339(value) if isinstance(value, str) else value


Rfc3339 = Annotated[datetime, BeforeValidator(_rfc3339_text)]


# A metadata filter's key goes into a JSON path (SQLite's '$."key"'): a quote, a backslash or a
# control character there was a database error (a 503) instead of a 422.
_FILTER_KEY = r'^[^"\\\[\]\x00-\x1f\x7f-\x9f]{1,64}$'
FilterKey = Annotated[Name, Field(pattern=_FILTER_KEY)]
FilterValue = Annotated[Name, Field(max_length=512)]


class ListJobsQuery(_Strict):
    status: list[JobStatus] = Field(default_factory=list)
    metadata: dict[FilterKey, FilterValue] = Field(
        default_factory=dict,
        description="metadata[key]=value: jobs whose metadata has these.",
        json_schema_extra={"propertyNames": {"pattern": _FILTER_KEY}},  # pydantic leaves keys out
    )
    model: str | None = Field(default=None, min_length=1, max_length=200)
    created_after: Rfc3339 | None = None
    created_before: Rfc3339 | None = None
    limit: int = Field(default=20, ge=1, le=100)
    cursor: str | None = None

    @field_validator("created_after", "created_before")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        """An aware time, in UTC; year 1 at +14:00 (before UTC's year 1) is out of range."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("give a timezone, e.g. 2026-11-24T00:00:00Z")
        return _utc(value)


def _utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time is out of range in UTC") from None


_METADATA_PARAM = re.compile(r"^metadata\[(?P<key>[^\]]{1,64})\]$")


def encode_cursor(cursor: Cursor) -> str:
    raw = json.dumps({"t": cursor.created_at.isoformat(), "id": cursor.job_id})
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(value: str) -> Cursor:
    """A cursor :func:`encode_cursor` made: base64 of a flat JSON object (deeper is refused before
    it is walked), its time in range in UTC."""
    try:
        raw = loads_json(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), max_depth=1)
        created_at = datetime.fromisoformat(raw["t"])
        if created_at.tzinfo is None or not isinstance(raw["id"], str):
            raise ValueError("bad cursor")
        return Cursor(created_at=_utc(created_at), job_id=raw["id"])
    except (BadRequest, ValueError, KeyError, TypeError, binascii.Error):
        raise InvalidInput("cursor is not one this API returned.", code="invalid_cursor") from None


def parse_list_query(args: Mapping[str, list[str]]) -> tuple[JobFilter, int, Cursor | None]:
    """``GET /v1/jobs`` query: status (repeat or comma-separate), model, created_after,
    created_before (RFC 3339), ``metadata[key]=value`` (one per key, as many keys as wanted),
    limit, cursor. Any but status given twice is a 422: which one was meant?"""
    metadata: dict[str, str] = {}
    plain: dict[str, Any] = {}
    for name, values in args.items():
        if len(values) > 1 and name != "status":
            raise InvalidInput(f"{name} is given more than once.", code="invalid_parameter")
        match = _METADATA_PARAM.match(name)
        if match is not None:
            metadata[match["key"]] = values[-1]
            plain["metadata"] = metadata
        elif name == "status":
            plain["status"] = [s for v in values for s in v.split(",")]  # "" is no status
        else:
            plain[name] = values[-1]
    query: ListJobsQuery = _parse(ListJobsQuery, plain)
    where = JobFilter(
        statuses=tuple(query.status),
        model=query.model,
        created_after=query.created_after,
        created_before=query.created_before,
        metadata=query.metadata,
    )
    cursor = None if query.cursor is None else _decode_cursor(query.cursor)
    return where, query.limit, cursor
