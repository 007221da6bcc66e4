"""One entry point builds the local tiny models the catalog expects, by directory name."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.models import build_local_models, build_models_for
from infra.models.__main__ import main
from infra.models.tiny_vlm import is_complete
from services.errors import InvalidInput
from services.settings import Settings
from tests.support.models import LLAMA_11B, TINY_VLLM_MODEL


def test_builds_the_named_models_under_the_models_dir_once(tmp_path: Path) -> None:
    build_local_models(tmp_path, ["tiny-vlm"])
    weights = tmp_path / "tiny-vlm" / "model.safetensors"
    before = weights.stat().st_mtime_ns

    build_local_models(tmp_path, ["tiny-vlm"])

    assert is_complete(tmp_path / "tiny-vlm")
    assert weights.stat().st_mtime_ns == before  # kept, not rebuilt
    assert [p.name for p in tmp_path.iterdir()] == ["tiny-vlm"]


def test_an_unknown_name_builds_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"no local model named \['gpt-9'\]"):
        build_local_models(tmp_path, ["tiny-vlm", "gpt-9"])
    assert list(tmp_path.iterdir()) == []


def test_builds_what_catalog_models_read_and_leaves_hub_models_alone(tmp_path: Path) -> None:
    build_models_for(Settings(models_dir=tmp_path), [TINY_VLLM_MODEL, LLAMA_11B])

    assert [p.name for p in tmp_path.iterdir()] == ["tiny-vlm"]
    with pytest.raises(InvalidInput):
        build_models_for(Settings(models_dir=tmp_path), ["no-such-model"])


def test_cli_builds_into_the_models_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["build", "--models-dir", str(tmp_path), "tiny-vlm"]) == 0

    assert capsys.readouterr().out.splitlines() == [str(tmp_path / "tiny-vlm")]
    assert is_complete(tmp_path / "tiny-vlm")


def test_cli_refuses_an_unknown_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["build", "--models-dir", str(tmp_path), "gpt-9"])

    assert exited.value.code == 2
    assert "no local model named ['gpt-9']" in capsys.readouterr().err
