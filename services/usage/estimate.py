"""The up-front cost estimate of a job: an upper bound made at submit, before it runs.

``max`` prices an upper bound of the prompt tokens, every requested image and all
``max_tokens`` completion tokens with the model's price card (the same ``price_job`` the ledger
uses), so a job can never cost more than its estimate.

Prompt-token bound, per text part, plus a fixed allowance for the chat template:

- with the model's tokenizer (``tokenizer.json`` in its weights directory, read with the
  ``tokenizers`` library when the API has it installed): the part's token count plus one
  (splitting text at part boundaries can change a merge at the seam);
- without one: the part's UTF-8 byte count. Llama 3 (and every byte-level BPE) never makes a
  token of less than one byte, so bytes bound tokens from above.

Text that is not valid Unicode (a lone surrogate, which JSON's ``\ud800`` escape can carry) is
counted by bytes, a surrogate as the 3 bytes of the U+FFFD that would replace it: the tokenizer
cannot take it, and the estimate never raises (the request schema refuses such text anyway).

Image tokens: Llama 3.2 Vision puts one ``<|image|>`` token in the prompt per image (the pixels
go through cross-attention). For architectures whose image token count is not known here, the
bound is the model's whole context. Any bound is capped at the context length, which the engine
never exceeds.
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
_SURROGATE = re.compile("[\ud800-\udfff]")


class TextCounter(Protocol):
    def count(self, spec: ModelSpec, text: str) -> int | None:
        """Tokens of ``text`` for ``spec``'s tokenizer, or None when no tokenizer is available."""
        ...


class TokenizerFileCounter:
    """Counts with ``tokenizer.json`` in the model's weights directory; loaded once per path."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokenizers: dict[str, Any] = {}

    def count(self, spec: ModelSpec, text: str) -> int | None:
        tokenizer = self._load(Path(spec.weights_path) / "tokenizer.json")
        if tokenizer is None or _SURROGATE.search(text):
            return None  # a lone surrogate makes the tokenizer raise TypeError
        return len(tokenizer.encode(text, add_special_tokens=False).ids)

    def _load(self, path: Path) -> Any:
        key = str(path)
        with self._lock:
            if key not in self._tokenizers:
                self._tokenizers[key] = _read_tokenizer(path)
            return self._tokenizers[key]


def _read_tokenizer(path: Path) -> Any:
    if not path.is_file():
        return None  # a hub id or weights not mounted on the API host: fall back to bytes
    try:
        # Lazy: the API image may not ship ``tokenizers``; the bound without it is still safe.
        from tokenizers import Tokenizer
    except ImportError:
        return None
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - the library raises bare Exception on bad files
        # A broken tokenizer file must not stop submissions; the byte bound is still safe.
        log.warning("cannot load tokenizer %s (%s); estimating from UTF-8 bytes", path, exc)
        return None


@dataclass(frozen=True)
class Estimate:
    prompt_tokens_max: int
    cost_max: Decimal
    counted_with: str  # "tokenizer" | "utf8_bytes"


class CostEstimator:
    def __init__(self, counter: TextCounter | None = None) -> None:
        self._counter = counter

    def estimate(
        self, spec: ModelSpec, messages: Sequence[Message], images: int, max_tokens: int
    ) -> Estimate:
        texts = [part.text for m in messages for part in m.content if part.type == "text"]
        counted_with = "utf8_bytes"
        counts = None
        if self._counter is not None and texts:
            counts = [self._counter.count(spec, text) for text in texts]
        if counts is not None and all(c is not None for c in counts):
            text_tokens = sum((c or 0) + 1 for c in counts)
            counted_with = "tokenizer"
        else:
            text_tokens = sum(_utf8_length(text) for text in texts)
        bound = TEMPLATE_TOKENS + MESSAGE_TOKENS * len(messages) + text_tokens
        per_image = IMAGE_PROMPT_TOKENS.get(spec.architecture)
        bound = spec.context_length if per_image is None and images else bound
        bound += (per_image or 0) * images
        prompt_max = min(bound, spec.context_length)
        cost = price_job(spec.price, prompt_max, max_tokens, images)
        return Estimate(
            prompt_tokens_max=prompt_max, cost_max=cost.total, counted_with=counted_with
        )


def _utf8_length(text: str) -> int:
    """Bytes of ``text`` in UTF-8; a lone surrogate counts 3 (as U+FFFD would), never raises."""
    return len(text.encode("utf-8", "surrogatepass"))
