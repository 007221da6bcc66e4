"""Fixtures for the engine tests: a transformers engine on the tiny random Llama 3.2 Vision."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from workers.engines.transformers_engine import TransformersEngine


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Run torch single-threaded while these tests run.

    The tiny model's matmuls gain nothing from intra-op threads, and on a 2-core machine shared
    with other test processes the spinning OpenMP workers thrash: the contract tests took 3x to
    20x longer with torch's default of one thread per core.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def transformers_engine(tiny_mllama_path: Path) -> Iterator[TransformersEngine]:
    """One engine shared by the session, as a worker process shares one; closed at teardown."""
    engine = TransformersEngine(str(tiny_mllama_path), max_batch_size=16, batch_window_ms=20)
    yield engine
    engine.close()
