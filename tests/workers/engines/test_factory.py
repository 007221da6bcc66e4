"""The engine factory picks the engine by the catalog entry's engine, never by model name."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from services.catalog.registry import build_registry
from services.errors import ConfigurationError
from services.settings import Settings
from tests.support.models import TINY_MODEL
from workers.engines.factory import load_engine
from workers.engines.transformers_engine import TransformersEngine


def test_any_model_name_on_transformers_weights_gets_the_transformers_engine(
    tiny_mllama_path: Path,
) -> None:
    spec = build_registry(Settings(models_dir=tiny_mllama_path.parent)).get(TINY_MODEL)
    renamed = replace(
        spec, name="acme-vision", engine_args=replace(spec.engine_args, max_num_seqs=3)
    )

    engine = load_engine(renamed, Settings())
    try:
        assert isinstance(engine, TransformersEngine)
        assert engine.max_batch_size == 3
    finally:
        engine.close()


def test_missing_local_weights_are_refused_not_built(tmp_path: Path) -> None:
    spec = build_registry(Settings(models_dir=tmp_path)).get(TINY_MODEL)

    with pytest.raises(
        ConfigurationError, match=rf"weights directory {tmp_path}/tiny-mllama does not exist"
    ):
        load_engine(spec, Settings())
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_engine_is_a_configuration_error(tmp_path: Path) -> None:
    spec = replace(build_registry(Settings()).get(TINY_MODEL), engine="onnx")

    with pytest.raises(ConfigurationError, match="unknown engine 'onnx'"):
        load_engine(spec, Settings())
