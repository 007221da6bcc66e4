"""The up-front estimate: an upper bound of what the job can cost."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest

from infra.models.tiny_mllama import build_tiny_mllama
from services.catalog.registry import build_registry
from services.settings import Settings
from services.types import ContentPart, Message
from services.usage.estimate import CostEstimator, TokenizerFileCounter
from services.usage.pricing import price_job
from tests.support.models import LLAMA_90B, TINY_MODEL, TINY_VLLM_MODEL

PROMPT = "Describe the picture in détail, please. 🙂"


def _messages(text: str = PROMPT) -> tuple[Message, ...]:
    return (Message("user", (ContentPart("image", image_index=0), ContentPart("text", text))),)


def test_estimate_without_tokenizer_bounds_tokens_by_utf8_bytes():
    spec = build_registry(Settings()).get(LLAMA_90B)  # weights are a hub id: no tokenizer here
    estimate = CostEstimator(TokenizerFileCounter()).estimate(spec, _messages(), 1, 200)
    assert estimate.counted_with == "utf8_bytes"
    assert estimate.prompt_tokens_max == 64 + 8 + len(PROMPT.encode()) + 1  # + one <|image|>
    assert estimate.cost_max == price_job(spec.price, estimate.prompt_tokens_max, 200, 1).total


def test_estimate_counts_with_the_models_tokenizer_when_present(models_dir):
    build_tiny_mllama(models_dir / "tiny-mllama")
    registry = build_registry(Settings(models_dir=models_dir))
    # Give the tiny model a price so the estimate is not zero.
    spec = dataclasses.replace(registry.get(TINY_MODEL), price=registry.get(LLAMA_90B).price)
    text = "word " * 200
    estimate = CostEstimator(TokenizerFileCounter()).estimate(spec, _messages(text), 1, 10)
    assert estimate.counted_with == "tokenizer"
    by_bytes = CostEstimator().estimate(spec, _messages(text), 1, 10)
    assert estimate.prompt_tokens_max < by_bytes.prompt_tokens_max
    assert estimate.cost_max < by_bytes.cost_max


def test_estimate_bounds_what_the_engine_counts(models_dir):
    transformers = pytest.importorskip("transformers")
    path = build_tiny_mllama(models_dir / "tiny-mllama")
    spec = build_registry(Settings(models_dir=models_dir)).get(TINY_MODEL)
    processor = transformers.AutoProcessor.from_pretrained(str(path))
    for text in ("hi", PROMPT, "a much longer prompt, " * 50):
        chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
        prompt = processor.apply_chat_template(chat, add_generation_prompt=True)
        actual = len(processor.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        estimate = CostEstimator(TokenizerFileCounter()).estimate(spec, _messages(text), 1, 8)
        assert actual <= estimate.prompt_tokens_max


def test_estimate_unknown_image_size_takes_the_whole_context():
    spec = build_registry(Settings()).get(TINY_VLLM_MODEL)
    estimate = CostEstimator().estimate(spec, _messages(), 1, 8)
    assert estimate.prompt_tokens_max == spec.context_length
    assert estimate.cost_max == Decimal(0)  # the tiny model is free


@pytest.mark.parametrize("with_tokenizer", [True, False])
def test_a_lone_surrogate_is_counted_not_raised(models_dir, with_tokenizer):
    """The tokenizer raised TypeError on "\\ud800" (and str.encode UnicodeEncodeError): a 500."""
    build_tiny_mllama(models_dir / "tiny-mllama")
    spec = build_registry(Settings(models_dir=models_dir)).get(TINY_MODEL)
    counter = TokenizerFileCounter() if with_tokenizer else None
    text = "bad \ud800 text"
    estimate = CostEstimator(counter).estimate(spec, _messages(text), 1, 8)
    assert estimate.counted_with == "utf8_bytes"  # the tokenizer cannot take it: bytes bound it
    assert estimate.prompt_tokens_max == 64 + 8 + len("bad \ufffd text".encode()) + 1


def test_the_lower_bound_is_at_most_what_the_engine_counts(models_dir):
    transformers = pytest.importorskip("transformers")
    path = build_tiny_mllama(models_dir / "tiny-mllama")
    spec = build_registry(Settings(models_dir=models_dir)).get(TINY_MODEL)
    processor = transformers.AutoProcessor.from_pretrained(str(path))
    for text in ("hi", PROMPT, "  padded  ", "a much longer prompt, " * 50, "word " * 1000):
        chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
        prompt = processor.apply_chat_template(chat, add_generation_prompt=True)
        actual = len(processor.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        for counter in (TokenizerFileCounter(), None):
            estimate = CostEstimator(counter).estimate(spec, _messages(text), 1, 8)
            assert estimate.prompt_tokens_min <= actual


def test_a_tokens_bytes_bound_every_token_of_the_vocabulary(tiny_mllama_path):
    tokenizers = pytest.importorskip("tokenizers")
    spec = build_registry(Settings(models_dir=tiny_mllama_path.parent)).get(TINY_MODEL)
    tokenizer = tokenizers.Tokenizer.from_file(str(tiny_mllama_path / "tokenizer.json"))
    spans = [len(tokenizer.decode([i], skip_special_tokens=False).encode()) for i in range(524)]
    assert max(spans) <= TokenizerFileCounter().token_bytes(spec)


class RecordingCounter:
    """A ``TextCounter`` that counts one token a byte and records what it was asked to count."""

    def __init__(self, token_bytes: int) -> None:
        self.asked: list[int] = []
        self._token_bytes = token_bytes

    def count(self, spec, text: str) -> int:
        self.asked.append(len(text))
        return len(text.encode())

    def token_bytes(self, spec) -> int:
        return self._token_bytes


def test_text_too_long_to_fit_is_bounded_by_its_bytes_without_counting():
    """Before: a 10 MB prompt went through the tokenizer (15 s of CPU on the tiny model's)."""
    spec = build_registry(Settings()).get(TINY_MODEL)
    counter = RecordingCounter(token_bytes=28)
    text = "x" * (28 * spec.context_length + 1)
    estimate = CostEstimator(counter).estimate(spec, _messages(text), 1, 8)
    assert counter.asked == []
    assert estimate.prompt_tokens_min == spec.context_length + 1 + 1  # + the <|image|> token
    assert estimate.prompt_tokens_max == spec.context_length
    assert estimate.counted_with == "utf8_bytes"


def test_text_that_might_fit_is_counted_and_bounded_both_ways():
    spec = build_registry(Settings()).get(TINY_MODEL)
    counter = RecordingCounter(token_bytes=28)
    estimate = CostEstimator(counter).estimate(spec, _messages("word " * 100), 1, 8)
    assert counter.asked == [500]
    assert estimate.counted_with == "tokenizer"
    assert estimate.prompt_tokens_min == 500 - 1 + 1
    assert estimate.prompt_tokens_max == 64 + 8 + 500 + 1 + 1


def test_without_a_tokenizer_a_token_is_taken_to_stand_for_at_most_256_bytes():
    spec = build_registry(Settings()).get(LLAMA_90B)
    estimate = CostEstimator(TokenizerFileCounter()).estimate(spec, _messages("x" * 2560), 0, 8)
    assert estimate.prompt_tokens_min == 10
