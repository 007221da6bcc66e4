"""Engine-agnostic contract tests, reused by every engine (transformers now, vLLM in its own tier).

A test module subclasses :class:`EngineContract` and provides two fixtures: ``engine``, a loaded
engine shared by the tests, serving the tiny random Mllama (or another tiny model of a real
architecture); and ``start_private_engine``, a factory of engines on the same model that a test
may close. The model's text is noise, so the tests check what must hold for any model: token
accounting, max_tokens, stop strings, penalties, determinism, batching transparency, input
checks, abort and close.

Assumptions about the engine under test: its context is at most 8192 tokens, and it decodes greedily
at temperature 0 with results that do not depend on what else is batched with a request.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import Any, ClassVar

import pytest
from PIL import Image

from services.errors import EngineError, Unavailable
from services.types import ContentPart, Message, SamplingParams
from workers.engines.base import Engine, GenerationRequest, GenerationResult

PROMPTS = (
    "Describe the image.",
    "What colour is the square?",
    "Count the objects in this picture and list them.",
    "Is there any text in the image? Transcribe it exactly, keeping the line breaks.",
)


def sample_image(width: int = 100, height: int = 60) -> Image.Image:
    """A small deterministic RGB image: a gradient with a square in it."""
    image = Image.new("RGB", (width, height))
    image.putdata(
        [
            ((x * 255) // width, (y * 255) // height, 128)
            for y in range(height)
            for x in range(width)
        ]
    )
    image.paste((250, 20, 20), (width // 4, height // 4, width // 2, height // 2))
    return image


def make_request(
    text: str = PROMPTS[0],
    *,
    with_image: bool = True,
    request_id: str | None = None,
    **params: object,
) -> GenerationRequest:
    """One user message (an image, then ``text``) with the given sampling parameters."""
    parts: tuple[ContentPart, ...] = (
        (ContentPart(type="image", image_index=0),) if with_image else ()
    ) + (ContentPart(type="text", text=text),)
    return GenerationRequest(
        request_id=request_id or uuid.uuid4().hex,
        messages=(Message(role="user", content=parts),),
        images=(sample_image(),) if with_image else (),
        params=SamplingParams(**params),  # type: ignore[arg-type]
    )


def pick_stop_string(text: str) -> str:
    """Two plain characters from the middle of ``text`` (skipping U+FFFD from split UTF-8)."""
    for start in range(1, len(text) - 1):
        candidate = text[start : start + 2]
        if "\ufffd" not in candidate and text.find(candidate) == start:
            return candidate
    pytest.skip(f"no usable stop string in {text!r}")


def submit(engine: Engine, request: GenerationRequest) -> Future[GenerationResult]:
    """Start ``engine.generate(request)`` on its own thread and return its future."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="contract-caller")
    try:
        return pool.submit(engine.generate, request)
    finally:
        pool.shutdown(wait=False)


class EngineContract:
    """Tests every engine must pass. Subclasses' modules provide the ``engine`` and
    ``start_private_engine`` fixtures, and may override the two hooks below."""

    #: Penalties strong enough to break the tiny model's repetitive greedy output.
    GREEDY_BREAKING_PENALTIES: ClassVar[dict[str, Any]] = {
        "presence_penalty": 2.0,
        "frequency_penalty": 2.0,
    }

    def wait_until_running(self, engine: Engine, request_id: str) -> None:
        """Return once ``request_id`` is generating (by default: after long enough that it is)."""
        time.sleep(0.5)

    def test_token_counts_are_positive_and_consistent(self, engine: Engine) -> None:
        short = engine.generate(make_request(PROMPTS[0], max_tokens=8, temperature=0))
        again = engine.generate(make_request(PROMPTS[0], max_tokens=8, temperature=0))
        longer = engine.generate(make_request(PROMPTS[3], max_tokens=8, temperature=0))
        text_only = engine.generate(
            make_request(PROMPTS[0], with_image=False, max_tokens=8, temperature=0)
        )

        assert short.prompt_tokens > 0
        assert 0 < short.completion_tokens <= 8
        assert short.finish_reason in ("stop", "length")
        if short.finish_reason == "length":
            assert short.completion_tokens == 8
        assert again.prompt_tokens == short.prompt_tokens
        assert longer.prompt_tokens > short.prompt_tokens
        assert text_only.prompt_tokens > 0 and text_only.completion_tokens > 0

    @pytest.mark.parametrize("max_tokens", [1, 5, 13])
    def test_ignore_eos_gives_exactly_max_tokens(self, engine: Engine, max_tokens: int) -> None:
        result = engine.generate(
            make_request(max_tokens=max_tokens, ignore_eos=True, temperature=0)
        )
        assert result.completion_tokens == max_tokens
        assert result.finish_reason == "length"

    def test_max_tokens_is_an_upper_bound(self, engine: Engine) -> None:
        for temperature in (0.0, 1.0):
            result = engine.generate(make_request(max_tokens=6, temperature=temperature, seed=7))
            assert 0 < result.completion_tokens <= 6
            assert result.finish_reason == ("length" if result.completion_tokens == 6 else "stop")

    def test_stop_string_truncates_and_reports_stop(self, engine: Engine) -> None:
        full = engine.generate(make_request(max_tokens=16, ignore_eos=True, temperature=0))
        stop = pick_stop_string(full.text)

        stopped = engine.generate(
            make_request(max_tokens=16, ignore_eos=True, temperature=0, stop=(stop,))
        )

        assert stopped.finish_reason == "stop"
        assert stopped.text == full.text[: full.text.find(stop)]
        assert stop not in stopped.text
        assert 0 < stopped.completion_tokens <= full.completion_tokens
        assert stopped.prompt_tokens == full.prompt_tokens

    def test_stop_string_never_produced_changes_nothing(self, engine: Engine) -> None:
        plain = engine.generate(make_request(max_tokens=10, ignore_eos=True, temperature=0))
        with_stop = engine.generate(
            make_request(max_tokens=10, ignore_eos=True, temperature=0, stop=("\x00never\x00",))
        )
        assert with_stop == plain

    def test_temperature_zero_is_deterministic(self, engine: Engine) -> None:
        results = [
            engine.generate(make_request(PROMPTS[1], max_tokens=12, temperature=0))
            for _ in range(3)
        ]
        assert results[0] == results[1] == results[2]

    def test_same_seed_same_sample(self, engine: Engine) -> None:
        def sample(seed: int) -> GenerationResult:
            return engine.generate(
                make_request(max_tokens=12, temperature=1.0, seed=seed, ignore_eos=True)
            )

        first, second, other = sample(1234), sample(1234), sample(4321)
        assert first == second
        # 12 tokens from a near-uniform distribution: a different seed gives a different sample.
        assert other.text != first.text

    def test_concurrent_requests_match_serial_results(self, engine: Engine) -> None:
        requests = [
            make_request(
                PROMPTS[i % len(PROMPTS)] + " Please." * (i // len(PROMPTS)),
                with_image=i % 5 != 4,
                max_tokens=4 + i,
                temperature=0,
                ignore_eos=i % 2 == 0,
            )
            for i in range(16)
        ]
        serial = [engine.generate(request) for request in requests]
        barrier = threading.Barrier(len(requests))

        def concurrent(request: GenerationRequest) -> GenerationResult:
            barrier.wait()
            return engine.generate(request)

        with ThreadPoolExecutor(max_workers=len(requests)) as pool:
            batched = list(pool.map(concurrent, requests))

        # Batched greedy output must equal unbatched greedy output, text included. This holds for
        # the tiny model in float32 on CPU (left padding is fully masked); a real model in bf16 on
        # GPU may drift by a token after a near-tie, in which case compare token counts and finish
        # reasons only, and say so here.
        for request, alone, together in zip(requests, serial, batched, strict=True):
            assert together == alone, request.request_id

    def test_concurrent_seeded_samples_match_serial(self, engine: Engine) -> None:
        requests = [
            make_request(PROMPTS[i % 2], max_tokens=8, temperature=1.0, top_p=0.95, seed=100 + i)
            for i in range(6)
        ]
        serial = [engine.generate(request) for request in requests]
        with ThreadPoolExecutor(max_workers=len(requests)) as pool:
            batched = list(pool.map(engine.generate, requests))
        assert batched == serial

    def test_abort_running_request_returns_quickly(self, engine: Engine) -> None:
        request = make_request(max_tokens=1500, ignore_eos=True, temperature=0)
        future = submit(engine, request)
        time.sleep(0.3)

        aborted_at = time.monotonic()
        engine.abort(request.request_id)
        result = future.result(timeout=10)

        assert time.monotonic() - aborted_at < 2.0
        assert result.finish_reason == "abort"
        assert result.completion_tokens < 1500

    def test_abort_of_unknown_request_is_ignored(self, engine: Engine) -> None:
        engine.abort("no-such-request")
        result = engine.generate(make_request(max_tokens=2, temperature=0))
        assert result.completion_tokens > 0

    def test_prompt_longer_than_context_is_rejected(self, engine: Engine) -> None:
        with pytest.raises(EngineError) as caught:
            engine.generate(make_request("lorem ipsum dolor " * 4000, max_tokens=4))
        assert caught.value.code == "context_length_exceeded"
        # The engine keeps serving afterwards.
        assert engine.generate(make_request(max_tokens=2, temperature=0)).completion_tokens > 0

    @pytest.mark.parametrize(
        "params",
        [
            {"max_tokens": 0},
            {"temperature": -1.0},
            {"top_p": 0.0},
            {"top_k": -2},
            {"min_p": 1.5},
            {"repetition_penalty": 0.0},
            {"stop": ("",)},
        ],
    )
    def test_impossible_sampling_values_are_rejected(
        self, engine: Engine, params: dict[str, Any]
    ) -> None:
        invalid = replace(make_request(max_tokens=2), params=SamplingParams(**params))
        with pytest.raises(EngineError) as caught:
            engine.generate(invalid)
        assert caught.value.code == "invalid_sampling_params"

    def test_all_sampling_controls_are_accepted(self, engine: Engine) -> None:
        result = engine.generate(
            make_request(
                max_tokens=6,
                temperature=0.7,
                top_p=0.9,
                top_k=20,
                min_p=0.05,
                presence_penalty=0.5,
                frequency_penalty=0.5,
                repetition_penalty=1.1,
                seed=3,
            )
        )
        assert 0 < result.completion_tokens <= 6

    def test_text_only_and_multi_turn_conversations(self, engine: Engine) -> None:
        request = GenerationRequest(
            request_id="multi-turn",
            messages=(
                Message(role="system", content=(ContentPart(type="text", text="Be brief."),)),
                Message(role="user", content=(ContentPart(type="text", text="Hello"),)),
                Message(role="assistant", content=(ContentPart(type="text", text="Hi."),)),
                Message(role="user", content=(ContentPart(type="text", text="Describe a cat."),)),
            ),
            images=(),
            params=SamplingParams(max_tokens=4, temperature=0),
        )
        result = engine.generate(request)
        assert result.prompt_tokens > 20 and result.completion_tokens > 0

    def test_image_reference_out_of_range_is_rejected(self, engine: Engine) -> None:
        broken = replace(make_request(max_tokens=2), images=())
        with pytest.raises(EngineError) as caught:
            engine.generate(broken)
        assert caught.value.code == "invalid_prompt"

    def test_penalties_change_greedy_output(self, engine: Engine) -> None:
        # Greedy decoding of the random model repeats tokens; strong penalties must break that.
        plain = engine.generate(make_request(max_tokens=16, ignore_eos=True, temperature=0))
        penalised = engine.generate(
            make_request(
                max_tokens=16, ignore_eos=True, temperature=0, **self.GREEDY_BREAKING_PENALTIES
            )
        )
        assert penalised.text != plain.text
        assert penalised.completion_tokens == 16

    def test_duplicate_request_id_is_rejected(self, engine: Engine) -> None:
        first = make_request(max_tokens=1500, ignore_eos=True, temperature=0, request_id="job-1")
        future = submit(engine, first)
        self.wait_until_running(engine, "job-1")
        with pytest.raises(EngineError) as caught:
            engine.generate(make_request(max_tokens=2, request_id="job-1"))
        engine.abort("job-1")
        assert future.result(timeout=10).finish_reason == "abort"
        assert caught.value.code == "duplicate_request"

    def test_close_fails_running_and_later_requests(
        self, start_private_engine: Callable[[], Engine]
    ) -> None:
        engine = start_private_engine()
        running = make_request(max_tokens=1500, ignore_eos=True, temperature=0)
        future = submit(engine, running)
        self.wait_until_running(engine, running.request_id)

        closing_started = time.monotonic()
        engine.close()
        closing = time.monotonic() - closing_started
        engine.close()  # idempotent

        assert isinstance(future.exception(timeout=10), Unavailable)
        with pytest.raises(Unavailable):
            engine.generate(make_request(max_tokens=2))
        engine.abort(running.request_id)  # ignored
        assert closing < 30
