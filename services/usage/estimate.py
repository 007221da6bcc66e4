"""The up-front cost estimate of a job: an upper bound made at submit, before it runs, and a
lower bound of its prompt that lets the job service refuse a prompt that cannot fit the context.

``max`` prices an upper bound of the prompt tokens, every requested image and all
``max_tokens`` completion tokens with the model's price card (the same ``price_job`` the ledger
uses), so a job can never cost more than its estimate.

Prompt-token bounds, per text part; the upper one adds a fixed allowance for the chat template:

- with the model's tokenizer (``tokenizer.json`` in its weights directory, read with the
  ``tokenizers`` library when the API has it installed): the part's token count plus or minus
  one (splitting text at part boundaries can change a merge at the seam);
- without one, or for text too long to count cheaply: the part's UTF-8 byte count above (Llama
  3, and every byte-level BPE, never makes a token of less than one byte), and below the bytes
  divided by the most bytes one token stands for (the tokenizer's longest vocabulary entry;
  ``UNKNOWN_TOKEN_BYTES`` without a tokenizer).

The lower bound counts the text as the client sent it: whitespace a chat template trims (Llama
3.2's does around a system message) counts too, so a prompt padded past the context is refused
like any other.

The count costs bounded CPU: the tokenizer only reads text of at most ``context_length`` times
the longest token's bytes (more could never fit); a longer prompt is bounded by its length alone
(a 10 MB prompt took 15 s of tokenizer time, and a 10 MB run of spaces made it panic).

Text that is not valid Unicode (a lone surrogate, which JSON's ``\ud800`` escape can carry) is
counted by bytes, a surrogate as the 3 bytes of the U+FFFD that would replace it: the tokenizer
cannot take it, and the estimate never raises (the request schema refuses such text anyway).

Image tokens: Llama 3.2 Vision puts one ``<|image|>`` token in the prompt per image (the pixels
go through cross-attention). For architectures whose image token count is not known here, the
upper bound is the model's whole context and the lower bound counts none. The upper bound is
capped at the context length, which the engine never exceeds; the lower one is not.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from services.catalog.spec import ModelSpec
from services.types import Message
from services.usage.pricing import price_job

log = logging.getLogger("loupe.usage")

# <|begin_of_text|>, a possible default system block with its date lines, the assistant header.
TEMPLATE_TOKENS = 64
# <|start_header_id|>role<|end_header_id|>\n\n ... <|eot_id|>
MESSAGE_TOKENS = 8
IMAGE_PROMPT_TOKENS = {"MllamaForConditionalGeneration": 1}
# Tokens a part's count may move by where it meets its neighbours in the prompt.
SEAM_TOKENS = 1
# The most input bytes one token is assumed to stand for when the tokenizer is not at hand;
# byte-level BPE vocabularies of current models stay below it.
UNKNOWN_TOKEN_BYTES = 256
# A normalizer (NFC, NFKC, lowercasing) can fold up to three code points into one, so a token
# of such a tokenizer may stand for three times its own bytes of input text.
NORMALIZED_SPAN = 3
_SURROGATE = re.compile("[\ud800-\udfff]")


class TextCounter(Protocol):
    def count(self, spec: ModelSpec, text: str) -> int | None:
        """Tokens of ``text`` for ``spec``'s tokenizer, or None when no tokenizer is available."""
        ...

    def token_bytes(self, spec: ModelSpec) -> int | None:
        """The most bytes of input text one token of ``spec``'s tokenizer stands for, or None
        when no tokenizer is available."""
        ...


@dataclass(frozen=True)
class _Vocabulary:
    tokenizer: Any
    token_bytes: int


class TokenizerFileCounter:
    """Counts with ``tokenizer.json`` in the model's weights directory; loaded once per path."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._vocabularies: dict[str, _Vocabulary | None] = {}

    def count(self, spec: ModelSpec, text: str) -> int | None:
        vocabulary = self._load(spec)
        if vocabulary is None or _SURROGATE.search(text):
            return None  # a lone surrogate makes the tokenizer raise TypeError
        return len(vocabulary.tokenizer.encode(text, add_special_tokens=False).ids)

    def token_bytes(self, spec: ModelSpec) -> int | None:
        vocabulary = self._load(spec)
        return None if vocabulary is None else vocabulary.token_bytes

    def _load(self, spec: ModelSpec) -> _Vocabulary | None:
        key = str(Path(spec.weights_path) / "tokenizer.json")
        with self._lock:
            if key not in self._vocabularies:
                self._vocabularies[key] = _read_tokenizer(Path(key))
            return self._vocabularies[key]


def _read_tokenizer(path: Path) -> _Vocabulary | None:
    if not path.is_file():
        return None  # a hub id or weights not mounted on the API host: fall back to bytes
    try:
        # Lazy: the API image may not ship ``tokenizers``; the bound without it is still safe.
        from tokenizers import Tokenizer
    except ImportError:
        return None
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - the library raises bare Exception on bad files
        # A broken tokenizer file must not stop submissions; the byte bound is still safe.
        log.warning("cannot load tokenizer %s (%s); estimating from UTF-8 bytes", path, exc)
        return None
    return _Vocabulary(tokenizer, _longest_token(tokenizer))


def _longest_token(tokenizer: Any) -> int:
    """The most input bytes one token stands for. A token's vocabulary spelling is never shorter
    in UTF-8 than the text it stands for (byte-level BPE spells a byte in 1 or 2 bytes, metaspace
    a space in 3, byte fallback a byte in 6), special tokens included; a normalizer may fold
    longer input into it (:data:`NORMALIZED_SPAN`)."""
    longest = max(len(token.encode()) for token in tokenizer.get_vocab(with_added_tokens=True))
    return longest * (NORMALIZED_SPAN if tokenizer.normalizer is not None else 1)


@dataclass(frozen=True)
class Estimate:
    prompt_tokens_max: int  # at most the context length
    prompt_tokens_min: int  # may exceed the context length: such a prompt cannot run
    cost_max: Decimal
    counted_with: str  # "tokenizer" | "utf8_bytes"


@dataclass(frozen=True)
class _TextTokens:
    low: int
    high: int
    counted_with: str


class CostEstimator:
    def __init__(self, counter: TextCounter | None = None) -> None:
        self._counter = counter

    def estimate(
        self, spec: ModelSpec, messages: Sequence[Message], images: int, max_tokens: int
    ) -> Estimate:
        texts = [part.text for m in messages for part in m.content if part.type == "text"]
        text = self._text_tokens(spec, texts)
        per_image = IMAGE_PROMPT_TOKENS.get(spec.architecture)
        bound = TEMPLATE_TOKENS + MESSAGE_TOKENS * len(messages) + text.high
        bound = spec.context_length if per_image is None and images else bound
        bound += (per_image or 0) * images
        prompt_max = min(bound, spec.context_length)
        cost = price_job(spec.price, prompt_max, max_tokens, images)
        return Estimate(
            prompt_tokens_max=prompt_max,
            prompt_tokens_min=text.low + (per_image or 0) * images,
            cost_max=cost.total,
            counted_with=text.counted_with,
        )

    def _text_tokens(self, spec: ModelSpec, texts: Sequence[str]) -> _TextTokens:
        """Bounds of the texts' tokens: by the tokenizer when there is one and the texts are
        short enough that they might fit the context, else by their bytes."""
        counter = self._counter
        token_bytes = (counter and counter.token_bytes(spec)) or UNKNOWN_TOKEN_BYTES
        size = sum(_utf8_length(text) for text in texts)
        low = -(-size // token_bytes)  # no token stands for more bytes
        counts = []
        if counter is not None and size <= token_bytes * spec.context_length:
            counts = [_part_tokens(counter, spec, text) for text in texts]
        known = [count for count in counts if count is not None]
        if not known or len(known) < len(texts):
            return _TextTokens(low, size, "utf8_bytes")
        low = max(low, sum(part_low for part_low, _ in known))
        return _TextTokens(low, sum(high for _, high in known), "tokenizer")


def _part_tokens(counter: TextCounter, spec: ModelSpec, text: str) -> tuple[int, int] | None:
    """(low, high) tokens of one text part, or None when the tokenizer cannot count it."""
    count = counter.count(spec, text)
    return None if count is None else (max(0, count - SEAM_TOKENS), count + SEAM_TOKENS)


def _utf8_length(text: str) -> int:
    """Bytes of ``text`` in UTF-8; a lone surrogate counts 3 (as U+FFFD would), never raises."""
    return len(text.encode("utf-8", "surrogatepass"))
