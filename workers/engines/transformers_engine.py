"""Hugging Face transformers engine for Llama 3.2 Vision (``MllamaForConditionalGeneration``).

Used on CPU (tests, local demo on the tiny model) and for architectures a given vLLM lacks. Many
Celery threads call :meth:`TransformersEngine.generate` at once; each call puts its request on a
queue and waits on its own ``Future``. ONE scheduler thread owns the model, the processor and the
tokenizer (so none of them is ever used from two threads): it collects the requests that arrive
within ``batch_window_ms`` (at most ``max_batch_size``), groups those whose sampling parameters can
share a ``generate`` call, and runs each group as one left-padded batch.

What can share a batch: requests with the same logits-shaping parameters (temperature, top_p, top_k,
min_p, presence/frequency/repetition penalties, ignore_eos) and the same modality (with or without
images). ``max_tokens`` and ``stop`` are per request (a per-row stopping criterion ends each row on
its own). A request with a seed that samples (temperature > 0) runs alone, under that seed, so the
same seed gives the same output; a seed with greedy decoding changes nothing and is ignored.

Each row's result is delivered the moment the row finishes (EOS, stop string, its own max_tokens,
or abort), not when the whole batch ends.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from jinja2 import TemplateError
from PIL import Image
from transformers import (
    AutoProcessor,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    MinPLogitsWarper,
    MllamaForConditionalGeneration,
    StoppingCriteria,
    StoppingCriteriaList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.utils import logging as hf_logging

from services.errors import ConfigurationError, EngineError, Unavailable
from services.types import SamplingParams
from workers.engines.base import GenerationRequest, GenerationResult, validate_sampling
from workers.engines.chat import to_chat

logger = logging.getLogger(__name__)

#: What rendering or encoding one request's prompt raises for bad input (the chat template's
#: ``raise_exception`` raises ``TemplateError``).
_PROMPT_ERRORS = (TemplateError, ValueError, TypeError, KeyError, IndexError)

DEFAULT_MAX_TOKENS = 32
_CLOSE_JOIN_SECONDS = 30.0


# --------------------------------------------------------------------------------------------
# Sampling parameters
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Sampling:
    """The logits-shaping part of ``SamplingParams``, normalised; equal values may share a batch."""

    greedy: bool
    temperature: float
    top_p: float
    top_k: int
    min_p: float
    presence_penalty: float
    frequency_penalty: float
    repetition_penalty: float
    ignore_eos: bool
    seed: int | None


def _normalise(params: SamplingParams) -> _Sampling:
    """Validate ``params`` and fold "unset" into neutral values. Raises ``EngineError``."""
    validate_sampling(params)
    greedy = not params.temperature  # None or 0 -> greedy
    return _Sampling(
        greedy=greedy,
        temperature=1.0 if greedy else float(params.temperature or 1.0),
        top_p=1.0 if greedy or params.top_p is None else float(params.top_p),
        top_k=0 if greedy or params.top_k is None or params.top_k < 0 else int(params.top_k),
        min_p=0.0 if greedy or params.min_p is None else float(params.min_p),
        presence_penalty=float(params.presence_penalty or 0.0),
        frequency_penalty=float(params.frequency_penalty or 0.0),
        repetition_penalty=float(params.repetition_penalty or 1.0),
        ignore_eos=params.ignore_eos,
        seed=None if greedy else params.seed,
    )


def _generation_config(
    sampling: _Sampling, max_new_tokens: int, eos_ids: Sequence[int], pad_id: int
) -> GenerationConfig:
    """Everything set explicitly, so neither the checkpoint's nor transformers' defaults leak in.

    Temperature, top-k/p and min-p are left neutral here and applied by our own processors (see
    :func:`_logits_processors`), so that they run after the OpenAI penalties, as in vLLM.
    """
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        # ignore_eos: EOS logits are masked until max_new_tokens, so exactly that many are produced.
        min_new_tokens=max_new_tokens if sampling.ignore_eos else 0,
        do_sample=not sampling.greedy,
        temperature=1.0,
        # 0 disables top-k; greedy gets transformers' default 50 (unused there), because any other
        # value makes GenerationConfig log "generation flags are not valid ... ['top_k']".
        top_k=50 if sampling.greedy else 0,
        top_p=1.0,
        repetition_penalty=sampling.repetition_penalty,
        eos_token_id=list(eos_ids),
        pad_token_id=pad_id,
        num_beams=1,
    )


class OpenAIPenaltiesProcessor(LogitsProcessor):
    """OpenAI ``presence_penalty`` / ``frequency_penalty`` over the generated tokens only.

    ``logits[t] -= frequency_penalty * count(t) + presence_penalty * (count(t) > 0)``, counting the
    tokens after ``prompt_length`` (the padded prompt width of the batch).
    """

    def __init__(self, prompt_length: int, presence_penalty: float, frequency_penalty: float):
        self.prompt_length = prompt_length
        self.presence_penalty = presence_penalty
        self.frequency_penalty = frequency_penalty

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.prompt_length :]
        if generated.shape[1] == 0:
            return scores
        counts = torch.zeros_like(scores)
        counts.scatter_add_(1, generated, torch.ones_like(generated, dtype=scores.dtype))
        penalty = self.frequency_penalty * counts + self.presence_penalty * (counts > 0).to(
            scores.dtype
        )
        return scores - penalty  # type: ignore[return-value]


def _logits_processors(sampling: _Sampling, prompt_length: int) -> LogitsProcessorList:
    """Penalties, then temperature, top-k, top-p, min-p (transformers adds repetition first)."""
    processors: list[LogitsProcessor] = []
    if sampling.presence_penalty or sampling.frequency_penalty:
        processors.append(
            OpenAIPenaltiesProcessor(
                prompt_length, sampling.presence_penalty, sampling.frequency_penalty
            )
        )
    if not sampling.greedy:
        if sampling.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(sampling.temperature))
        if sampling.top_k > 0:
            processors.append(TopKLogitsWarper(sampling.top_k))
        if sampling.top_p < 1.0:
            processors.append(TopPLogitsWarper(sampling.top_p))
        if sampling.min_p > 0.0:
            processors.append(MinPLogitsWarper(sampling.min_p))
    return LogitsProcessorList(processors)


# --------------------------------------------------------------------------------------------
# Requests in flight
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Pending:
    """One ``generate`` call: its request, the caller's future, and where it stands.

    ``state`` moves queued -> running -> done under the engine lock; only the transition to done
    resolves the future, so a future is resolved exactly once. ``aborted`` is per call, not per
    request id, so nothing about an id outlives its call.
    """

    request: GenerationRequest
    sampling: _Sampling
    future: Future[GenerationResult] = field(default_factory=Future)
    state: str = "queued"
    aborted: bool = False  # set by abort() (or a caller that stopped waiting) while running


@dataclass(frozen=True)
class _Prepared:
    """A request turned into model input: the prompt text, its images and its token budget."""

    pending: _Pending
    prompt: str
    images: list[Image.Image]
    prompt_tokens: int
    max_new_tokens: int


@dataclass
class _Row:
    """Per-row stopping state of one batch."""

    prepared: _Prepared
    finished: bool = False


def _batch_key(prepared: _Prepared) -> tuple[Any, ...]:
    """Requests with equal keys can share one ``generate`` call."""
    sampling = prepared.pending.sampling
    alone = id(prepared.pending) if sampling.seed is not None else None
    return (bool(prepared.images), sampling, alone)


def _group(prepared: Sequence[_Prepared]) -> list[list[_Prepared]]:
    """Split into batch-compatible groups, keeping arrival order within and across groups."""
    groups: dict[tuple[Any, ...], list[_Prepared]] = {}
    for item in prepared:
        groups.setdefault(_batch_key(item), []).append(item)
    return list(groups.values())


def _abort_result() -> GenerationResult:
    return GenerationResult(text="", finish_reason="abort", prompt_tokens=0, completion_tokens=0)


# --------------------------------------------------------------------------------------------
# Per-row stopping
# --------------------------------------------------------------------------------------------


class RowStoppingCriteria(StoppingCriteria):
    """Ends each row on its own: EOS, a stop string, its own token budget, or an abort.

    Called by ``generate`` after every step with the whole ``input_ids`` (prompt of width
    ``prompt_length`` plus the tokens so far). When a row ends, ``on_finish(row, tokens, reason)``
    is called at once with that row's generated tokens (EOS included, padding excluded) and
    ``"stop"``, ``"length"`` or ``"abort"``. Returns which rows are finished, so ``generate``
    stops when all are.
    """

    def __init__(
        self,
        *,
        prompt_length: int,
        budgets: Sequence[int],
        stops: Sequence[tuple[str, ...]],
        eos_ids: frozenset[int],
        decode: Callable[[list[int]], str],
        is_aborted: Callable[[int], bool],
        on_finish: Callable[[int, list[int], str], None],
    ):
        self.prompt_length = prompt_length
        self.budgets = list(budgets)
        self.stops = list(stops)
        self.eos_ids = eos_ids
        self.decode = decode
        self.is_aborted = is_aborted
        self.on_finish = on_finish
        self.finished = [False] * len(self.budgets)

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor | None, **kwargs: Any
    ) -> torch.BoolTensor:
        length = int(input_ids.shape[1]) - self.prompt_length
        last_tokens = input_ids[:, -1].tolist()
        for row, last in enumerate(last_tokens):
            if self.finished[row]:
                continue
            reason = self._reason(row, input_ids, length, last)
            if reason is not None:
                self.finished[row] = True
                self.on_finish(row, self._generated(input_ids, row), reason)
        return torch.tensor(self.finished, dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]

    def _generated(self, input_ids: torch.LongTensor, row: int) -> list[int]:
        tokens: list[int] = input_ids[row, self.prompt_length :].tolist()
        return tokens

    def _reason(self, row: int, input_ids: torch.LongTensor, length: int, last: int) -> str | None:
        if length > 0 and last in self.eos_ids:
            return "stop"
        stops = self.stops[row]
        if stops and length > 0:
            text = self.decode(self._generated(input_ids, row))
            if any(stop in text for stop in stops):
                return "stop"
        if length >= self.budgets[row]:
            return "length"
        if self.is_aborted(row):
            return "abort"
        return None


def _truncate_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """``text`` cut before the earliest stop string, and whether one was found."""
    cuts = [index for index in (text.find(stop) for stop in stops) if index >= 0]
    if not cuts:
        return text, False
    return text[: min(cuts)], True


# --------------------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------------------


class TransformersEngine:
    """An :class:`~workers.engines.base.Engine` running ``generate()`` with dynamic batching.

    Contract:

    - ``generate`` is thread-safe and blocks until its request is done. It raises ``EngineError``
      for input the model rejects (prompt of ``max_context`` tokens or more:
      ``context_length_exceeded``; a bad image reference or a chat-template refusal:
      ``invalid_prompt``; impossible sampling values: ``invalid_sampling_params``; a duplicate
      in-flight ``request_id``: ``duplicate_request``) and when ``generate()`` itself fails
      (``engine_error``). It raises ``Unavailable`` if the engine is (or gets) closed.
    - ``max_new_tokens`` is ``params.max_tokens`` (default :data:`DEFAULT_MAX_TOKENS`), capped so
      prompt + completion fit in ``max_context`` (finish_reason ``"length"`` at the cap).
    - ``prompt_tokens`` counts the request's own (unpadded) prompt tokens, ``<|image|>`` included;
      ``completion_tokens`` counts generated tokens up to and including EOS or the token that
      completed a stop string. The text excludes special tokens and the stop string.
    - ``abort(request_id)``: a queued request returns at once (``"abort"``, 0 and 0 tokens); a
      running one ends at the next decoding step with the text so far and ``"abort"``. Unknown
      or finished ids are ignored.
    - ``close()`` stops the scheduler: running requests are cut short and, like queued ones,
      raise ``Unavailable`` (the job may be retried elsewhere). Idempotent.
    """

    def __init__(
        self,
        weights_path: str,
        *,
        device: str = "cpu",
        max_batch_size: int = 16,
        batch_window_ms: float = 5.0,
        max_context: int = 2048,
    ) -> None:
        if max_batch_size < 1 or batch_window_ms < 0 or max_context < 2:
            raise ConfigurationError(
                "TransformersEngine needs max_batch_size >= 1, batch_window_ms >= 0, "
                f"max_context >= 2; got {max_batch_size}, {batch_window_ms}, {max_context}"
            )
        self.max_batch_size = max_batch_size
        self.batch_window = batch_window_ms / 1000.0
        self.max_context = max_context
        self.device = torch.device(device)
        self._processor, self._model = _load(weights_path, self.device)
        self._tokenizer = self._processor.tokenizer
        self._eos_ids, self._pad_id = _special_ids(self._model, self._tokenizer)

        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._active: dict[str, _Pending] = {}
        self._batch_sizes: Counter[int] = Counter()
        self._closed = False
        self._thread = threading.Thread(
            target=self._serve, name="transformers-engine-scheduler", daemon=True
        )
        self._thread.start()

    # ---- public API -------------------------------------------------------------------------

    def generate(self, request: GenerationRequest) -> GenerationResult:
        """Run ``request`` to completion (batched with concurrent calls) and return its result."""
        pending = _Pending(request=request, sampling=_normalise(request.params))
        with self._lock:
            if self._closed:
                raise Unavailable("the transformers engine is closed")
            if request.request_id in self._active:
                raise EngineError(
                    f"request {request.request_id!r} is already running", code="duplicate_request"
                )
            self._active[request.request_id] = pending
        self._queue.put(pending)
        try:
            return pending.future.result()
        finally:
            self._forget(pending)

    def abort(self, request_id: str) -> None:
        """Abort ``request_id`` if it is queued or running; otherwise do nothing."""
        with self._lock:
            pending = self._active.get(request_id)
            if pending is None or pending.state == "done":
                return
            self._abort_locked(pending)

    def is_running(self, request_id: str) -> bool:
        """True while ``request_id`` is in a ``generate()`` batch (not queued, not finished)."""
        with self._lock:
            pending = self._active.get(request_id)
            return pending is not None and pending.state == "running"

    def batch_size_counts(self) -> dict[int, int]:
        """How many ``generate()`` batches ran with each batch size since start (for metrics)."""
        with self._lock:
            return dict(self._batch_sizes)

    def close(self) -> None:
        """Stop the scheduler thread; in-flight and queued requests raise ``Unavailable``."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(None)
        self._thread.join(_CLOSE_JOIN_SECONDS)
        if self._thread.is_alive():
            logger.warning(
                "transformers engine scheduler did not stop within %ss", _CLOSE_JOIN_SECONDS
            )
        self._fail_leftovers()

    # ---- futures ----------------------------------------------------------------------------

    def _abort_locked(self, pending: _Pending) -> None:
        """Queued: resolve now with an empty "abort". Running: the next decoding step ends it."""
        if pending.state == "queued":
            self._resolve_locked(pending, _abort_result())
        elif pending.state == "running":
            pending.aborted = True

    def _forget(self, pending: _Pending) -> None:
        """End of a ``generate`` call. If the caller stopped waiting (e.g. a task time limit
        interrupted it), abort the request so it stops using the model."""
        with self._lock:
            if self._active.get(pending.request.request_id) is pending:
                del self._active[pending.request.request_id]
            self._abort_locked(pending)

    def _resolve_locked(self, pending: _Pending, outcome: GenerationResult | BaseException) -> None:
        """Resolve ``pending`` once (caller holds the lock); later resolutions are ignored."""
        if pending.state == "done":
            return
        pending.state = "done"
        if isinstance(outcome, BaseException):
            pending.future.set_exception(outcome)
        else:
            pending.future.set_result(outcome)

    def _resolve(self, pending: _Pending, outcome: GenerationResult | BaseException) -> None:
        with self._lock:
            self._resolve_locked(pending, outcome)

    def _claim(self, prepared: Sequence[_Prepared]) -> list[_Prepared]:
        """Mark still-queued requests running; drop those aborted (or failed) meanwhile."""
        claimed: list[_Prepared] = []
        with self._lock:
            if self._closed:  # close() fails whatever is left once the scheduler has stopped
                return claimed
            for item in prepared:
                if item.pending.state == "queued":
                    item.pending.state = "running"
                    claimed.append(item)
            if claimed:
                self._batch_sizes[len(claimed)] += 1
        return claimed

    def _is_aborted(self, pending: _Pending) -> bool:
        with self._lock:
            return self._closed or pending.aborted

    def _fail_leftovers(self) -> None:
        """After the scheduler stopped: nothing may wait forever."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                self._resolve(item, Unavailable("the transformers engine was closed"))
        with self._lock:
            for pending in list(self._active.values()):
                self._resolve_locked(pending, Unavailable("the transformers engine was closed"))

    # ---- scheduler thread ---------------------------------------------------------------------

    def _serve(self) -> None:
        """Scheduler loop: collect a window of requests, run them group by group."""
        with torch.inference_mode():
            while True:
                batch, closing = self._collect()
                try:
                    self._run_window(batch)
                except Exception as exc:  # never let the scheduler die, nor a caller wait forever
                    logger.exception("transformers engine scheduler error")
                    error = EngineError(f"engine failure: {type(exc).__name__}: {exc}")
                    for pending in batch:
                        self._resolve(pending, error)
                if closing:
                    return

    def _collect(self) -> tuple[list[_Pending], bool]:
        """Block for one request, then gather more for ``batch_window`` or up to the batch size."""
        first = self._queue.get()
        if first is None:
            return [], True
        batch = [first]
        deadline = time.monotonic() + self.batch_window
        while len(batch) < self.max_batch_size:
            remaining = deadline - time.monotonic()
            try:
                item = (
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    def _run_window(self, batch: Sequence[_Pending]) -> None:
        prepared = [item for item in (self._prepare(p) for p in batch) if item is not None]
        for group in _group(prepared):
            claimed = self._claim(group)
            if claimed:
                self._run_group(claimed)

    def _prepare(self, pending: _Pending) -> _Prepared | None:
        """Render and measure one request; resolve it with its error and return None if it fails."""
        if pending.state != "queued":
            return None
        try:
            return self._render(pending)
        except EngineError as exc:
            self._resolve(pending, exc)
        except _PROMPT_ERRORS as exc:  # template, tokenizer or image errors on this request's input
            self._resolve(
                pending, EngineError(f"cannot build the prompt: {exc}", code="invalid_prompt")
            )
        except Exception as exc:
            logger.exception("preparing request %s failed", pending.request.request_id)
            self._resolve(pending, EngineError(f"cannot prepare the request: {exc}"))
        return None

    def _render(self, pending: _Pending) -> _Prepared:
        request = pending.request
        conversation, order = to_chat(request.messages, len(request.images))
        prompt = self._processor.apply_chat_template(
            conversation, add_generation_prompt=True, tokenize=False
        )
        if not isinstance(prompt, str):
            raise EngineError("the chat template did not produce text", code="invalid_prompt")
        prompt_tokens = len(self._tokenizer(prompt, add_special_tokens=False)["input_ids"])
        if prompt_tokens >= self.max_context:
            raise EngineError(
                f"the prompt is {prompt_tokens} tokens; this model's context is {self.max_context} "
                "tokens including at least one generated token",
                code="context_length_exceeded",
            )
        wanted = request.params.max_tokens or DEFAULT_MAX_TOKENS
        return _Prepared(
            pending=pending,
            prompt=prompt,
            images=[request.images[index] for index in order],
            prompt_tokens=prompt_tokens,
            max_new_tokens=min(wanted, self.max_context - prompt_tokens),
        )

    def _run_group(self, group: Sequence[_Prepared]) -> None:
        """One ``generate`` call for ``group``; every row's future is resolved when this returns."""
        try:
            self._generate(group)
        except Exception as exc:
            logger.exception("generate() failed for a batch of %d", len(group))
            error = EngineError(f"generation failed: {type(exc).__name__}: {exc}")
            for item in group:
                self._resolve(item.pending, error)

    def _generate(self, group: Sequence[_Prepared]) -> None:
        inputs = self._encode(group)
        prompt_length = int(inputs["input_ids"].shape[1])
        sampling = group[0].pending.sampling
        max_new_tokens = max(item.max_new_tokens for item in group)
        criteria = RowStoppingCriteria(
            prompt_length=prompt_length,
            budgets=[item.max_new_tokens for item in group],
            stops=[item.pending.request.params.stop for item in group],
            eos_ids=frozenset() if sampling.ignore_eos else self._eos_ids,
            decode=self._decode,
            is_aborted=lambda row: self._is_aborted(group[row].pending),
            on_finish=lambda row, tokens, reason: self._finish(group[row], tokens, reason),
        )
        logger.debug("generate: batch of %d, %d new tokens", len(group), max_new_tokens)
        with _seeded(sampling.seed, self.device):
            output = self._model.generate(
                **inputs,
                generation_config=_generation_config(
                    sampling, max_new_tokens, sorted(self._eos_ids), self._pad_id
                ),
                logits_processor=_logits_processors(sampling, prompt_length),
                stopping_criteria=StoppingCriteriaList([criteria]),
            )
        self._finish_stragglers(group, criteria, output[:, prompt_length:].tolist())

    def _encode(self, group: Sequence[_Prepared]) -> Mapping[str, torch.Tensor]:
        """The batch as model inputs: left-padded ids, masks and (if any) image tensors."""
        images = [item.images for item in group] if group[0].images else None
        encoded = self._processor(
            images=images,
            text=[item.prompt for item in group],
            add_special_tokens=False,
            padding=True,
            return_tensors="pt",
        )
        return {name: tensor.to(self.device) for name, tensor in encoded.items()}

    def _decode(self, tokens: list[int]) -> str:
        return str(self._tokenizer.decode(tokens, skip_special_tokens=True))

    def _finish(self, item: _Prepared, tokens: list[int], reason: str) -> None:
        """Build and deliver one row's result (called from inside ``generate``)."""
        text = self._decode(tokens)
        if reason == "stop":
            text, _ = _truncate_at_stop(text, item.pending.request.params.stop)
        with self._lock:
            closed_under_it = self._closed and not item.pending.aborted
        if reason == "abort" and closed_under_it:
            self._resolve(item.pending, Unavailable("the transformers engine was closed"))
            return
        result = GenerationResult(
            text=text,
            finish_reason=reason,
            prompt_tokens=item.prompt_tokens,
            completion_tokens=len(tokens),
        )
        self._resolve(item.pending, result)

    def _finish_stragglers(
        self, group: Sequence[_Prepared], criteria: RowStoppingCriteria, generated: list[list[int]]
    ) -> None:
        """Rows ``generate`` ended without our criterion seeing it (defensive): report "length"."""
        for row, item in enumerate(group):
            if not criteria.finished[row]:
                self._finish(item, generated[row][: item.max_new_tokens], "length")


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _load(weights_path: str, device: torch.device) -> tuple[Any, MllamaForConditionalGeneration]:
    """Processor and model from a local directory (never the hub), in eval mode on ``device``."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        with _progress_bars_disabled():
            processor = AutoProcessor.from_pretrained(weights_path, local_files_only=True)
            model = MllamaForConditionalGeneration.from_pretrained(
                weights_path, dtype=dtype, local_files_only=True
            )
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot load a Mllama model from {weights_path}: {exc}") from exc
    model.to(device)
    model.eval()
    processor.tokenizer.padding_side = "left"
    return processor, model


def _special_ids(
    model: MllamaForConditionalGeneration, tokenizer: Any
) -> tuple[frozenset[int], int]:
    """EOS ids (the checkpoint's generation list plus the tokenizer's) and the pad id."""
    eos: set[int] = set()
    configured = model.generation_config.eos_token_id
    if isinstance(configured, int):
        eos.add(configured)
    elif configured is not None:
        eos.update(int(token) for token in configured)
    if tokenizer.eos_token_id is not None:
        eos.add(int(tokenizer.eos_token_id))
    if not eos:
        raise ConfigurationError("the model defines no end-of-sequence token")
    pad = tokenizer.pad_token_id
    pad_id = int(pad) if pad is not None else min(eos)
    return frozenset(eos), pad_id


@contextmanager
def _progress_bars_disabled() -> Iterator[None]:
    """Keep transformers' "Loading weights" bar out of worker logs."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


@contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Run under ``seed`` without disturbing the process RNG; no-op when ``seed`` is None."""
    if seed is None:
        yield
        return
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
