"""The catalog file: ``models.toml`` (shipped beside this module), patched by a deployment's file.

Both files hold ``[[models]]`` tables (the keys are described at the top of ``models.toml``).
The deployment's file (``LOUPE_MODELS_FILE``) is merged into the shipped one by ``name``:

- a name the catalog lacks adds a model, which must be complete (every required key);
- a name the catalog has patches that model: each key given replaces the catalog's, except the
  tables ``limits``, ``price`` and ``engine_args``, which are patched key by key (so
  ``engine_args = { tensor_parallel_size = 4 }`` keeps the other engine args); giving ``path``
  or ``hub_id`` replaces the catalog's weights, whichever of the two it had;
- models keep the shipped file's order, added ones follow in the deployment file's order.

A top-level ``default_model`` names the model a job runs when it names none; the deployment's
file may set it too, and ``LOUPE_DEFAULT_MODEL`` overrides both. It must name a catalog model.

Nothing is removed by the file (``LOUPE_SERVED_MODELS`` narrows what a process serves). Every
problem (a TOML syntax error, a missing or unknown key, a wrong type, an unknown engine, a price
that is not a non-negative decimal string) is a ConfigurationError naming the file and model.
Prices are decimal strings so a card is exact: a TOML float is binary and refused.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn

from services.catalog.spec import ENGINES, EngineArgs, ModelSpec
from services.errors import ConfigurationError
from services.types import PriceCard

SHIPPED = "services/catalog/models.toml"
_TABLES = frozenset({"limits", "price", "engine_args"})
_WEIGHTS = frozenset({"path", "hub_id"})


@dataclass(frozen=True)
class Catalog:
    """The merged catalog: its models in order, and the one a job runs when it names none."""

    models: list[ModelSpec]
    default_model: str


def load_catalog(models_dir: Path, override: Path | None = None) -> Catalog:
    """Every model of the shipped catalog, patched and extended by the ``override`` file.

    A relative ``path`` is resolved against ``models_dir``; an absolute one and a ``hub_id``
    are used as they are. ConfigurationError for any problem in either file.
    """
    text = resources.files("services.catalog").joinpath("models.toml").read_text("utf-8")
    shipped = _parse(text, SHIPPED)
    entries, default = _entries(shipped, SHIPPED), _default(shipped, SHIPPED)
    if override is not None:
        patch = _parse(_read(override), str(override))
        entries = merge(entries, _entries(patch, str(override)))
        default = _default(patch, str(override)) or default
    if default not in entries:
        raise ConfigurationError(f"default_model {default!r} is not a model of the catalog")
    return Catalog([_spec(entry, models_dir) for entry in entries.values()], default)


def _default(document: Mapping[str, Any], source: str) -> str:
    """The file's ``default_model`` ("" when it sets none)."""
    value = document.get("default_model", "")
    if not isinstance(value, str):
        raise ConfigurationError(f"{source}: default_model must be a model name, got {value!r}")
    return value


@dataclass(frozen=True)
class Entry:
    """One ``[[models]]`` table and where it came from (for error messages)."""

    fields: Mapping[str, Any]
    source: str


def merge(base: dict[str, Entry], patch: dict[str, Entry]) -> dict[str, Entry]:
    """``base`` with ``patch``'s entries applied by name (the rule in the module docstring)."""
    merged = dict(base)
    for name, entry in patch.items():
        old = merged.get(name)
        merged[name] = entry if old is None else _patched(old, entry)
    return merged


def _patched(old: Entry, new: Entry) -> Entry:
    fields = dict(old.fields)
    if _WEIGHTS & set(new.fields):
        fields = {key: value for key, value in fields.items() if key not in _WEIGHTS}
    for key, value in new.fields.items():
        both_tables = isinstance(value, dict) and isinstance(fields.get(key), dict)
        fields[key] = {**fields[key], **value} if key in _TABLES and both_tables else value
    return Entry(fields, f"{old.source} patched by {new.source}")


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"models file {path}: cannot read it: {exc}") from exc


def _parse(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"models file {source}: not valid TOML: {exc}") from exc


def _entries(document: Mapping[str, Any], source: str) -> dict[str, Entry]:
    """The file's ``[[models]]`` tables by name; duplicate names and other keys are errors."""
    unknown = sorted(set(document) - {"models", "default_model"})
    if unknown:
        raise ConfigurationError(f"{source}: unknown keys {unknown}")
    tables = document.get("models", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigurationError(f"{source}: models must be an array of tables ([[models]])")
    entries: dict[str, Entry] = {}
    for table in tables:
        name = table.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"{source}: a [[models]] table has no name")
        if name in entries:
            raise ConfigurationError(f"{source}: model {name!r} is listed twice")
        entries[name] = Entry(table, source)
    return entries


def _spec(entry: Entry, models_dir: Path) -> ModelSpec:
    """The entry as a ModelSpec; every key must be known and every required one present."""
    table = _Table(entry.fields, f"{entry.source}: model {entry.fields['name']!r}")
    weights_path, local = _weights(table, models_dir)
    limits = table.table("limits")
    spec = ModelSpec(
        name=table.text("name"),
        engine=_engine(table),
        weights_path=weights_path,
        local_weights=local,
        architecture=table.text("architecture"),
        owned_by=table.text("owned_by"),
        system_prompt_with_images=table.flag("system_prompt_with_images", False),
        max_images=limits.integer("max_images"),
        max_output_tokens=limits.integer("max_output_tokens"),
        default_max_tokens=limits.integer("default_max_tokens"),
        context_length=limits.integer("context_length"),
        price=_price(table.table("price")),
        engine_args=_engine_args(table.table("engine_args", required=False)),
    )
    for checked in (table, limits):
        checked.no_unknown_keys()
    return spec


def _engine(table: _Table) -> str:
    engine = table.text("engine")
    if engine not in ENGINES:
        table.fail(f"unknown engine {engine!r} (one of {', '.join(sorted(ENGINES))})")
    return engine


def _weights(table: _Table, models_dir: Path) -> tuple[str, bool]:
    """(weights, local): ``path`` under ``models_dir`` (absolute as is), or ``hub_id``."""
    path, hub_id = table.optional_text("path"), table.optional_text("hub_id")
    if (path is None) == (hub_id is None):
        table.fail("needs exactly one of path (a local directory) and hub_id")
    if hub_id is not None:
        return hub_id, False
    return str(models_dir / str(path)), True


def _price(table: _Table) -> PriceCard:
    card = PriceCard(
        input_per_million=table.price("input_per_million"),
        output_per_million=table.price("output_per_million"),
        per_image=table.price("per_image"),
        currency=table.text("currency", "USD"),
    )
    table.no_unknown_keys()
    return card


def _engine_args(table: _Table) -> EngineArgs:
    """Engine args given in the table; :class:`EngineArgs`' defaults for the others."""
    defaults = EngineArgs()
    args = EngineArgs(
        max_num_seqs=table.integer("max_num_seqs", defaults.max_num_seqs),
        max_model_len=table.optional_integer("max_model_len"),
        enforce_eager=table.flag("enforce_eager", defaults.enforce_eager),
        tensor_parallel_size=table.integer("tensor_parallel_size", defaults.tensor_parallel_size),
        gpu_memory_utilization=table.fraction(
            "gpu_memory_utilization", defaults.gpu_memory_utilization
        ),
        limit_mm_per_prompt=table.counts("limit_mm_per_prompt", defaults.limit_mm_per_prompt),
        dtype=table.text("dtype", defaults.dtype),
    )
    table.no_unknown_keys()
    return args


_REQUIRED: Any = object()


class _Table:
    """Typed reads of one TOML table; remembers the keys read, so the rest are unknown keys."""

    def __init__(self, data: Mapping[str, Any], where: str) -> None:
        self._data = data
        self._where = where
        self._read: set[str] = set()

    def fail(self, problem: str) -> NoReturn:
        raise ConfigurationError(f"{self._where}: {problem}")

    def _get(self, key: str, default: Any, kind: type | tuple[type, ...], what: str) -> Any:
        self._read.add(key)
        if key not in self._data:
            return self.fail(f"missing {key}") if default is _REQUIRED else default
        value = self._data[key]
        # bool is an int in Python, but TOML's true/false is never a number (nor a number a flag).
        if not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
            self.fail(f"{key} must be {what}, got {value!r}")
        return value

    def text(self, key: str, default: Any = _REQUIRED) -> str:
        value: str = self._get(key, default, str, "a string")
        return value

    def optional_text(self, key: str) -> str | None:
        value: str | None = self._get(key, None, str, "a string")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value: bool = self._get(key, default, bool, "true or false")
        return value

    def integer(self, key: str, default: Any = _REQUIRED) -> int:
        value = self.optional_integer(key, default)
        assert value is not None  # a required key or an int default
        return value

    def optional_integer(self, key: str, default: Any = None) -> int | None:
        value: int | None = self._get(key, default, int, "a positive integer")
        if value is not None and value < 1:
            self.fail(f"{key} must be a positive integer, got {value!r}")
        return value

    def fraction(self, key: str, default: float) -> float:
        value = self._get(key, default, (int, float), "a number in (0, 1]")
        if not 0 < value <= 1:
            self.fail(f"{key} must be a number in (0, 1], got {value!r}")
        return float(value)

    def price(self, key: str) -> Decimal:
        raw = self._get(key, _REQUIRED, str, 'a decimal string such as "0.35"')
        try:
            value = Decimal(raw)
        except InvalidOperation:
            value = Decimal("NaN")
        if not value.is_finite() or value < 0:
            self.fail(f"{key} must be a non-negative decimal string, got {raw!r}")
        return value

    def counts(self, key: str, default: Mapping[str, int]) -> Mapping[str, int]:
        value = self._get(key, default, dict, "a table of non-negative integers")
        if not all(type(n) is int and n >= 0 for n in value.values()):
            self.fail(f"{key} must be a table of non-negative integers, got {value!r}")
        return MappingProxyType(dict(value))

    def table(self, key: str, *, required: bool = True) -> _Table:
        value = self._get(key, _REQUIRED if required else {}, dict, "a table")
        return _Table(value, f"{self._where} [{key}]")

    def no_unknown_keys(self) -> None:
        unknown = sorted(set(self._data) - self._read)
        if unknown:
            self.fail(f"unknown keys {unknown}")
