"""The transformers engine: the engine contract, plus what is specific to its batching scheduler."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch

from services.errors import ConfigurationError, EngineError
from services.types import ContentPart, Message, SamplingParams
from tests.workers.engines.contract import (
    EngineContract,
    make_request,
    sample_image,
    submit,
)
from workers.engines.base import Engine, GenerationRequest, GenerationResult
from workers.engines.transformers_engine import (
    OpenAIPenaltiesProcessor,
    RowStoppingCriteria,
    TransformersEngine,
)


@pytest.fixture
def engine(transformers_engine: TransformersEngine) -> Engine:
    return transformers_engine


@pytest.fixture
def fresh_engine(tiny_mllama_path: Path) -> Iterator[TransformersEngine]:
    """A private engine for tests that close it or need its scheduler to themselves."""
    engine = TransformersEngine(str(tiny_mllama_path), batch_window_ms=50)
    yield engine
    engine.close()


@pytest.fixture
def start_private_engine(tiny_mllama_path: Path) -> Callable[[], Engine]:
    return lambda: TransformersEngine(str(tiny_mllama_path))


class TestTransformersEngineContract(EngineContract):
    """The shared contract, on the tiny Mllama."""

    def wait_until_running(self, engine: Engine, request_id: str) -> None:
        assert isinstance(engine, TransformersEngine)
        _wait_until_running(engine, request_id)


def _wait_until_running(engine: TransformersEngine, request_id: str) -> None:
    deadline = time.monotonic() + 5
    while not engine.is_running(request_id):
        assert time.monotonic() < deadline, f"{request_id} never started"
        time.sleep(0.005)


class TestScheduler:
    def test_concurrent_requests_share_a_batch(self, fresh_engine: TransformersEngine) -> None:
        requests = [make_request(max_tokens=4, temperature=0) for _ in range(8)]
        barrier = threading.Barrier(len(requests))

        def call(request: GenerationRequest) -> GenerationResult:
            barrier.wait()
            return fresh_engine.generate(request)

        threads = [threading.Thread(target=call, args=(r,)) for r in requests]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)

        sizes = fresh_engine.batch_size_counts()
        assert sum(size * count for size, count in sizes.items()) == 8
        assert max(sizes) > 1, sizes

    def test_eos_ends_each_row_on_its_own(self, fresh_engine: TransformersEngine) -> None:
        # The random model puts ~0.6% of its probability on the three EOS ids: among 16 rows of up
        # to 128 sampled tokens some row ends on EOS (all 16 reaching 128 has odds of ~e^-12).
        torch.manual_seed(0)
        requests = [make_request(max_tokens=128, temperature=1.0) for _ in range(16)]
        barrier = threading.Barrier(len(requests))

        def call(request: GenerationRequest) -> GenerationResult:
            barrier.wait()
            return fresh_engine.generate(request)

        with ThreadPoolExecutor(max_workers=len(requests)) as pool:
            results = list(pool.map(call, requests))

        stopped = [r for r in results if r.finish_reason == "stop"]
        assert stopped, results
        for result in results:
            assert result.finish_reason in ("stop", "length")
            assert (result.completion_tokens < 128) == (result.finish_reason == "stop")
            assert "<|" not in result.text  # special tokens (EOS included) are not in the text

    def test_abort_queued_request_returns_at_once(self, fresh_engine: TransformersEngine) -> None:
        # The long greedy request occupies the scheduler; the sampled one cannot join its batch.
        blocker = make_request(max_tokens=1500, ignore_eos=True, temperature=0)
        blocker_future = submit(fresh_engine, blocker)
        _wait_until_running(fresh_engine, blocker.request_id)
        queued = make_request(max_tokens=8, temperature=1.0)
        queued_future = submit(fresh_engine, queued)
        time.sleep(0.05)

        fresh_engine.abort(queued.request_id)
        queued_result = queued_future.result(timeout=1)
        blocker_was_running = fresh_engine.is_running(blocker.request_id)
        fresh_engine.abort(blocker.request_id)

        assert queued_result == GenerationResult(
            text="", finish_reason="abort", prompt_tokens=0, completion_tokens=0
        )
        assert blocker_was_running
        assert blocker_future.result(timeout=10).finish_reason == "abort"

    def test_aborting_one_row_leaves_the_rest_of_the_batch(
        self, fresh_engine: TransformersEngine
    ) -> None:
        rows = [make_request(max_tokens=1500, ignore_eos=True, temperature=0) for _ in range(2)]
        futures = [submit(fresh_engine, request) for request in rows]
        for request in rows:
            _wait_until_running(fresh_engine, request.request_id)

        fresh_engine.abort(rows[0].request_id)
        first = futures[0].result(timeout=5)
        other_still_running = fresh_engine.is_running(rows[1].request_id)
        fresh_engine.abort(rows[1].request_id)
        second = futures[1].result(timeout=10)

        assert other_still_running
        assert first.finish_reason == second.finish_reason == "abort"
        assert first.completion_tokens < second.completion_tokens


class TestInputs:
    def test_system_message_with_image_is_refused_like_llama_3_2(self, engine: Engine) -> None:
        request = GenerationRequest(
            request_id="system-and-image",
            messages=(
                Message(role="system", content=(ContentPart(type="text", text="Be brief."),)),
                make_request().messages[0],
            ),
            images=(sample_image(),),
            params=SamplingParams(max_tokens=2),
        )
        with pytest.raises(EngineError) as caught:
            engine.generate(request)
        assert caught.value.code == "invalid_prompt"
        assert "system messages" in caught.value.message

    def test_max_tokens_is_capped_by_the_context(self, tiny_mllama_path: Path) -> None:
        engine = TransformersEngine(str(tiny_mllama_path), max_context=40)
        try:
            result = engine.generate(make_request(max_tokens=100, ignore_eos=True, temperature=0))
        finally:
            engine.close()
        assert result.finish_reason == "length"
        assert result.prompt_tokens + result.completion_tokens == 40

    def test_generate_failure_is_an_engine_error_and_the_engine_recovers(
        self, fresh_engine: TransformersEngine, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        model = fresh_engine._model
        real_generate = model.generate

        def broken_generate(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("CUDA error: device-side assert triggered")

        monkeypatch.setattr(model, "generate", broken_generate)
        with pytest.raises(EngineError) as caught:
            fresh_engine.generate(make_request(max_tokens=2))
        monkeypatch.setattr(model, "generate", real_generate)

        assert caught.value.code == "engine_error"
        assert "RuntimeError: CUDA error" in caught.value.message
        assert fresh_engine.generate(make_request(max_tokens=2)).completion_tokens > 0

    def test_missing_weights_are_a_configuration_error(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigurationError):
            TransformersEngine(str(tmp_path / "nowhere"))


class TestOpenAIPenalties:
    def test_counts_only_generated_tokens(self) -> None:
        processor = OpenAIPenaltiesProcessor(
            prompt_length=2, presence_penalty=0.5, frequency_penalty=0.25
        )
        input_ids = torch.tensor([[1, 1, 2, 2, 3]])
        scores = torch.zeros(1, 5)

        penalised = processor(input_ids, scores)  # type: ignore[arg-type]

        # token 1 only in the prompt: untouched; token 2 twice: 0.5 + 2 * 0.25; token 3 once.
        assert penalised.tolist() == [[0.0, 0.0, -1.0, -0.75, 0.0]]


class TestRowStoppingCriteria:
    def _criteria(
        self, finished: list[tuple[int, list[int], str]], **overrides: object
    ) -> RowStoppingCriteria:
        settings: dict[str, object] = {
            "prompt_length": 1,
            "budgets": [3, 3],
            "stops": [(), ()],
            "eos_ids": frozenset({9}),
            "decode": lambda tokens: "".join(chr(ord("a") + t) for t in tokens),
            "is_aborted": lambda row: False,
            "on_finish": lambda row, tokens, reason: finished.append((row, tokens, reason)),
        }
        settings.update(overrides)
        return RowStoppingCriteria(**settings)  # type: ignore[arg-type]

    def test_eos_length_stop_string_and_abort(self) -> None:
        finished: list[tuple[int, list[int], str]] = []
        criteria = self._criteria(
            finished,
            budgets=[5, 5, 2, 5],
            stops=[(), ("cd",), (), ()],
            is_aborted=lambda row: row == 3,
        )
        step1 = criteria(torch.tensor([[0, 9], [0, 2], [0, 1], [0, 1]]), None)  # type: ignore[arg-type]
        step2 = criteria(torch.tensor([[0, 9, 0], [0, 2, 3], [0, 1, 1], [0, 1, 1]]), None)  # type: ignore[arg-type]

        assert step1.tolist() == [True, False, False, True]
        assert step2.tolist() == [True, True, True, True]
        assert finished == [
            (0, [9], "stop"),
            (3, [1], "abort"),
            (1, [2, 3], "stop"),
            (2, [1, 1], "length"),
        ]
