"""What the tiny model builders share: an idempotent, race-safe install and the tokenizer.

A builder writes a whole model directory into a staging directory beside its target and renames
it into place, so a reader never sees a half-written model and concurrent builders (threads or
processes) cannot corrupt each other. A marker file written last says which build a directory
holds. The tokenizer is a byte-level BPE with Llama 3's pre-tokenizer, trained here on a
builder's corpus; like Llama 3's, it adds BOS itself. Builds are deterministic: same files, same
weights, in any process.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Llama 3's pre-tokenizer split pattern.
LLAMA3_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
BPE_VOCAB_TARGET = 512
SEED = 0
# Weight init draws from torch's process-global RNG: builders in threads of one process take
# turns, or their draws interleave and the weights stop being deterministic.
_BUILD_LOCK = threading.Lock()


@dataclass(frozen=True)
class Stamp:
    """A finished build: its marker file (``marker``) holds ``version``, bumped whenever the
    built files change, so a stale build is rebuilt rather than reused."""

    marker: str
    version: str


def is_complete(path: Path, stamp: Stamp) -> bool:
    """True when ``path`` holds a finished build carrying ``stamp``."""
    marker = path / stamp.marker
    if not (path / "config.json").is_file() or not marker.is_file():
        return False
    return marker.read_text(encoding="utf-8").strip() == stamp.version


def build_once(path: Path, stamp: Stamp, write: Callable[[Path], None]) -> Path:
    """Build into ``path`` with ``write`` (idempotent, safe for concurrent builders); return it.

    If ``path`` already holds a complete build, return at once. Otherwise ``write`` fills an
    empty staging directory beside ``path``, which is renamed into place atomically (a losing
    concurrent builder discards its copy). ``path`` may exist as an empty directory; a non-empty,
    incomplete ``path`` raises ``FileExistsError`` rather than being silently overwritten.
    """
    path = Path(path)
    if is_complete(path, stamp):
        return path
    with _BUILD_LOCK:
        if not is_complete(path, stamp):
            _build_and_install(path, stamp, write)
    return path


def _build_and_install(path: Path, stamp: Stamp, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.building-", dir=path.parent))
    try:
        write(staging)
        (staging / stamp.marker).write_text(stamp.version + "\n", encoding="utf-8")
        _make_readable(staging)
        _install(staging, path, stamp)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _make_readable(directory: Path) -> None:
    """``mkdtemp`` makes the directory 0700 and the weights file is 0600: open them for readers."""
    directory.chmod(0o755)
    for child in directory.iterdir():
        child.chmod(0o644)


def _install(staging: Path, path: Path, stamp: Stamp) -> None:
    """Atomically move a finished ``staging`` build to ``path`` (which may be absent or empty)."""
    try:
        os.rename(staging, path)
    except OSError as exc:
        if is_complete(path, stamp):  # a concurrent builder got there first: its build is as good
            return
        raise FileExistsError(
            f"{path} exists and is not a complete build of this model; remove it and build again"
        ) from exc


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """No progress bars and only errors from transformers' logger for the block.

    Saving a model draws a "Writing model shards" bar, and ``save_pretrained`` of some configs
    diffs against a default config whose defaults log warnings that are not about ours.
    """
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if was_enabled:
            hf_logging.enable_progress_bar()


@dataclass(frozen=True)
class TokenizerSpec:
    """What differs between the builders' tokenizers: corpus, special tokens and their roles."""

    corpus: tuple[str, ...]
    special_tokens: tuple[str, ...]
    bos: str
    eos: str
    pad: str
    model_max_length: int


def train_tokenizer(spec: TokenizerSpec) -> Any:
    """Train a byte-level BPE on ``spec.corpus``: a fast tokenizer that adds BOS like Llama 3.

    The special tokens follow the trained vocabulary, in ``spec.special_tokens`` order.
    """
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    bpe = _trained_bpe(spec.corpus)
    bpe.add_special_tokens(list(spec.special_tokens))
    # Like the real Llama 3 tokenizer: BOS is added by the post-processor (chat prompts already
    # contain it, so callers tokenize them with add_special_tokens=False).
    bpe.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{spec.bos} $A",
                pair=f"{spec.bos} $A {spec.bos} $B",
                special_tokens=[(spec.bos, bpe.token_to_id(spec.bos))],
            ),
        ]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=spec.bos,
        eos_token=spec.eos,
        pad_token=spec.pad,
        model_input_names=["input_ids", "attention_mask"],
        # transformers 5 warns (and ignores it) when True on a BPE tokenizer.
        clean_up_tokenization_spaces=False,
        model_max_length=spec.model_max_length,
    )


def _trained_bpe(corpus: Iterable[str]) -> Any:
    """A byte-level BPE with Llama 3's split pattern, trained on ``corpus``."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_TARGET,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer)
    return bpe


def token_id(tokenizer: Any, token: str) -> int:
    """``token``'s id; RuntimeError when the tokenizer lacks it."""
    found = tokenizer.convert_tokens_to_ids(token)
    if not isinstance(found, int) or found == tokenizer.unk_token_id:
        raise RuntimeError(f"tokenizer lacks {token}")
    return found


def read_json(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise RuntimeError(f"{path} is not a JSON object")
    return data


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Sorted keys and a trailing newline: the same bytes for the same data, every build."""
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def save_seeded_model(model_class: Any, config: Any, generation_config: Any, out: Path) -> None:
    """``model_class(config)`` initialised from :data:`SEED` (without disturbing the caller's
    RNG), so its weights are the same on every build; saved to ``out`` with its generation
    config, in eval mode."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = model_class(config)
    model.generation_config = generation_config
    model.eval()
    model.save_pretrained(str(out))
