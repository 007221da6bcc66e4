"""The vLLM engine: the shared engine contract through real vLLM, plus what is specific to it."""

from __future__ import annotations

import importlib.util
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import pytest

from workers.engines.vllm_engine import vllm_import_error

if (_why := vllm_import_error()) is not None:  # the main suite's virtualenv has no vLLM
    pytest.skip(
        f"vLLM tier: vllm cannot be imported here ({_why}); build its virtualenv with "
        "infra/vllm/make-venv.sh, then .venv-vllm/bin/python -m pytest tests/vllm",
        allow_module_level=True,
    )

from services.errors import ConfigurationError
from services.types import SamplingParams
from tests.vllm.conftest import start_engine
from tests.workers.engines.contract import (
    EngineContract,
    make_request,
    sample_image,
    submit,
)
from workers.engines import vllm_engine as vllm_engine_module
from workers.engines.base import Engine, GenerationRequest, GenerationResult
from workers.engines.vllm_engine import (
    MLLAMA_REFUSAL,
    VllmEngine,
    check_model_support,
    sampling_kwargs,
    vllm_sampling_params,
)


@pytest.fixture
def engine(vllm_engine: VllmEngine) -> Engine:
    return vllm_engine


@pytest.fixture
def start_private_engine(vllm_environment: None, tiny_vlm_path: Path) -> Callable[[], Engine]:
    return lambda: start_engine(tiny_vlm_path, max_num_seqs=4)


class TestVllmEngineContract(EngineContract):
    """The shared contract, through vLLM on the tiny Idefics3."""

    # vLLM's own copy of the penalties test also set a repetition penalty: still asked of it.
    GREEDY_BREAKING_PENALTIES: ClassVar[dict[str, Any]] = {
        **EngineContract.GREEDY_BREAKING_PENALTIES,
        "repetition_penalty": 2.0,
    }


def _run_all(engine: Engine, requests: list[GenerationRequest]) -> list[GenerationResult]:
    """All requests at once, each from its own thread, released together."""
    barrier = threading.Barrier(len(requests))

    def call(request: GenerationRequest) -> GenerationResult:
        barrier.wait()
        return engine.generate(request)

    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        return list(pool.map(call, requests))


def _timed(action: Callable[[], Any]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


class TestBatching:
    def test_concurrent_requests_are_batched(self, engine: Engine) -> None:
        requests = [make_request(max_tokens=32, ignore_eos=True, temperature=0) for _ in range(16)]
        engine.generate(requests[0])  # warm the prefix cache like the rest will find it

        serial = _timed(lambda: [engine.generate(request) for request in requests])
        batched = _timed(lambda: _run_all(engine, requests))

        # One at a time, every decoding step runs one sequence; together, 16 share each step.
        assert serial / batched > 3, (serial, batched)

    def test_request_beyond_max_num_seqs_waits_and_aborts_at_once(self, engine: Engine) -> None:
        running = [make_request(max_tokens=1500, ignore_eos=True, temperature=0) for _ in range(16)]
        futures = [submit(engine, request) for request in running]
        time.sleep(0.5)  # all 16 sequence slots are taken
        waiting = make_request(max_tokens=8, temperature=0)
        waiting_future = submit(engine, waiting)
        time.sleep(0.2)

        aborted_at = time.monotonic()
        engine.abort(waiting.request_id)
        waiting_result = waiting_future.result(timeout=5)
        abort_seconds = time.monotonic() - aborted_at
        still_running = [future.done() for future in futures]
        for request in running:
            engine.abort(request.request_id)
        results = [future.result(timeout=10) for future in futures]

        assert abort_seconds < 2.0
        assert waiting_result.finish_reason == "abort"
        assert waiting_result.completion_tokens == 0
        assert not any(still_running)
        assert {result.finish_reason for result in results} == {"abort"}
        assert all(0 < result.completion_tokens < 1500 for result in results)


class TestInputs:
    def test_prompt_tokens_are_the_processors_count_with_one_bos(
        self, engine: Engine, tiny_vlm_path: Path
    ) -> None:
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(str(tiny_vlm_path))
        request = make_request("Describe the image.", max_tokens=2, temperature=0)
        text = processor.apply_chat_template(
            [
                {
                    "role": "user",
                    "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}],
                }
            ],
            add_generation_prompt=True,
            tokenize=False,
        )
        encoded = processor(text=text, images=[sample_image()], add_special_tokens=False)
        expected = encoded["input_ids"][0]

        result = engine.generate(request)

        assert expected.count(processor.tokenizer.bos_token_id) == 1
        assert result.prompt_tokens == len(expected)


class TestSamplingKwargs:
    def test_unset_values_take_the_model_default_else_vllms(self) -> None:
        kwargs = sampling_kwargs(
            SamplingParams(max_tokens=5), {"temperature": 0.6, "top_p": 0.9, "top_k": 0}
        )
        assert kwargs == {
            "n": 1,
            "max_tokens": 5,
            "ignore_eos": False,
            "temperature": 0.6,
            "top_p": 0.9,
        }

    def test_every_loupe_value_is_passed_on(self) -> None:
        params = SamplingParams(
            max_tokens=7,
            temperature=0.0,
            top_p=0.5,
            top_k=40,
            min_p=0.1,
            stop=("\n\n", "END"),
            seed=11,
            presence_penalty=0.2,
            frequency_penalty=0.3,
            repetition_penalty=1.2,
            ignore_eos=True,
        )
        kwargs = sampling_kwargs(params, {"temperature": 0.6})
        assert kwargs == {
            "n": 1,
            "max_tokens": 7,
            "temperature": 0.0,
            "top_p": 0.5,
            "top_k": 40,
            "min_p": 0.1,
            "stop": ["\n\n", "END"],
            "seed": 11,
            "presence_penalty": 0.2,
            "frequency_penalty": 0.3,
            "repetition_penalty": 1.2,
            "ignore_eos": True,
        }
        vllm_sampling_params(params, {})  # and this vLLM accepts them

    def test_disabled_top_k_is_left_to_vllms_own_default(self) -> None:
        for top_k in (0, -1):
            kwargs = sampling_kwargs(SamplingParams(max_tokens=1, top_k=top_k), {})
            assert "top_k" not in kwargs


class TestModelSupport:
    def test_mllama_is_refused_on_this_vllm(self) -> None:
        with pytest.raises(ConfigurationError) as caught:
            check_model_support("MllamaForConditionalGeneration")
        assert MLLAMA_REFUSAL in caught.value.message
        assert "vllm==0.10.2" in caught.value.message

    def test_served_architectures_pass(self) -> None:
        check_model_support("Idefics3ForConditionalGeneration")
        check_model_support("LlamaForCausalLM")

    @pytest.mark.parametrize(
        ("version", "refused"),
        [
            ("0.10.2", False),
            ("0.9.2.post2", False),
            ("0.10.2+cu128", False),
            ("0.11.0", True),
            ("0.32.0+cpu", True),
        ],
    )
    def test_mllama_is_served_up_to_0_10_2(
        self, monkeypatch: pytest.MonkeyPatch, version: str, refused: bool
    ) -> None:
        monkeypatch.setattr(vllm_engine_module, "installed_vllm_version", lambda: version)
        if refused:
            with pytest.raises(ConfigurationError):
                check_model_support("MllamaForConditionalGeneration")
        else:
            check_model_support("MllamaForConditionalGeneration")

    def test_missing_vllm_is_a_configuration_error(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real_find_spec = importlib.util.find_spec
        monkeypatch.setattr(
            importlib.util,
            "find_spec",
            lambda name, *args: None if name == "vllm" else real_find_spec(name, *args),
        )
        with pytest.raises(ConfigurationError) as caught:
            check_model_support("Idefics3ForConditionalGeneration")
        assert "not installed" in caught.value.message

    def test_engine_refuses_mllama_weights_before_starting(self, tmp_path: Path) -> None:
        (tmp_path / "config.json").write_text(
            json.dumps({"architectures": ["MllamaForConditionalGeneration"]}), encoding="utf-8"
        )
        started = time.monotonic()
        with pytest.raises(ConfigurationError) as caught:
            VllmEngine(str(tmp_path), engine_args={})
        assert MLLAMA_REFUSAL in caught.value.message
        assert time.monotonic() - started < 5


class TestStructuredOutput:
    SCHEMA: dict[str, Any] = {
        "type": "object",
        "properties": {"colour": {"enum": ["red", "blue"]}, "count": {"enum": [1, 2, 3]}},
        "required": ["colour", "count"],
        "additionalProperties": False,
    }

    def test_json_schema_output_parses_and_matches(self, engine: Engine) -> None:
        request = make_request("Describe the image.", max_tokens=200, temperature=0)
        request = replace(
            request,
            params=replace(
                request.params, response_format={"type": "json_schema", "schema": self.SCHEMA}
            ),
        )
        result = engine.generate(request)
        assert result.finish_reason == "stop", result
        data = json.loads(result.text)
        assert data["colour"] in {"red", "blue"}
        assert data["count"] in {1, 2, 3}
        assert set(data) == {"colour", "count"}

    def test_json_object_output_is_json(self, engine: Engine) -> None:
        request = make_request("Describe the image.", max_tokens=300, temperature=0)
        request = replace(
            request, params=replace(request.params, response_format={"type": "json_object"})
        )
        result = engine.generate(request)
        if result.finish_reason == "stop":
            assert isinstance(json.loads(result.text), dict)
        else:  # a random model may keep writing; what it wrote must still be a JSON object start
            assert result.text.lstrip().startswith("{")
