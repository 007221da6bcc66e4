"""The vLLM tier: the real vLLM engine (CPU build) on a tiny random Idefics3.

Runs only in the vLLM virtualenv (``infra/vllm/make-venv.sh``, then
``.venv-vllm/bin/python -m pytest tests/vllm``). Where vLLM cannot be imported (the main suite's
virtualenv) every test module here skips itself with the reason (pytest does not allow a conftest
to skip), and the session fixtures below never run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.localstack.parts import ENGINE_DEFAULTS, QUIET_ENV
from infra.models import build_local_models

# The e2e helpers (start_worker) start one dispatcher per stack; this stops them at the end.
from tests.e2e.conftest import _stop_dispatchers  # noqa: F401
from workers.engines.vllm_engine import VllmEngine  # imports vllm lazily: safe without it

#: As a worker would run it on CPU: eager mode (no torch.compile: ~25 s to start instead of ~70),
#: 16 sequences in flight, a context with room for the contract's 1500-token abort test, and
#: float32: on CPU vLLM would otherwise downcast the float32 checkpoint to bfloat16, where a
#: near-tie can make batched greedy output differ from serial (the contract passed in bf16 too
#: on this model; float32 keeps that assertion from depending on luck).
ENGINE_ARGS: dict[str, Any] = {
    "enforce_eager": True,
    "max_num_seqs": 16,
    "max_model_len": 2048,
    "dtype": "float32",
    "seed": 0,
}


#: The suite turns warnings into errors. vLLM, torch and transformers emit deprecation warnings
#: of their own while the engine starts and runs (e.g. "`torch.jit.script_method` is deprecated"
#: from model code vLLM imports), partly on the engine's loop thread, where an error would kill
#: the engine: in this tier those two categories are let through (the main suite still checks
#: Loupe's own code with every warning an error).
THIRD_PARTY_WARNINGS = ("ignore::DeprecationWarning", "ignore::FutureWarning")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            for spec in THIRD_PARTY_WARNINGS:
                item.add_marker(pytest.mark.filterwarnings(spec))


@pytest.fixture(scope="session")
def tiny_vlm_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Idefics3, built once per session (a few seconds)."""
    models_dir = tmp_path_factory.mktemp("models")
    build_local_models(models_dir, ["tiny-vlm"])
    return models_dir / "tiny-vlm"


#: The environment a worker of the local stack gives its engine (its processes inherit it): a
#: 1 GiB KV cache (the 4 GiB default only slows the start), no OpenTelemetry, no usage stats.
ENGINE_ENVIRONMENT = {**ENGINE_DEFAULTS, **QUIET_ENV}


@pytest.fixture(scope="session")
def vllm_environment() -> Iterator[None]:
    """:data:`ENGINE_ENVIRONMENT` for the session (values already set are kept)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in ENGINE_ENVIRONMENT.items():
            patch.setenv(name, os.environ.get(name, value))
        yield


def start_engine(path: Path, **overrides: Any) -> VllmEngine:
    return VllmEngine(str(path), engine_args={**ENGINE_ARGS, **overrides})


@pytest.fixture(scope="session")
def vllm_engine(vllm_environment: None, tiny_vlm_path: Path) -> Iterator[VllmEngine]:
    """One engine for the session, as one worker process shares one; closed at teardown."""
    engine = start_engine(tiny_vlm_path)
    yield engine
    engine.close()
