"""Build a tiny, randomly initialised Idefics3 (``Idefics3ForConditionalGeneration``).

The vLLM CPU test tier needs a vision-language model that current vLLM serves on CPU without
torchvision (PyPI's torchvision is a CUDA build that cannot be imported beside CPU torch). Of the
candidates, vLLM 0.32's Qwen2-VL / Qwen2.5-VL, Gemma 3 and LLaVA model files import
transformers' torchvision image processors (or ``pixtral``) at module level; Idefics3 (the
architecture of SmolVLM and Idefics3-8B-Llama3: a SigLIP-style vision encoder, a pixel-shuffle
connector and a Llama text model) only needs the PIL image processor. So this is the tiny model
of that architecture, built offline:

- vision: hidden 64, 2 layers, 2 heads, image_size 32, patch 8 (16 patches per tile; with
  ``scale_factor`` 2 the connector gives 4 ``<image>`` tokens per tile);
- text: Llama, hidden 128, 2 layers, 4 heads / 2 KV heads (head_dim 32, as CPU PagedAttention
  requires), 4096 positions;
- a byte-level BPE tokenizer trained here on a built-in corpus, with Llama 3's BOS/EOS, the
  Idefics3 image tokens (``<fake_token_around_image>``, ``<image>``, ``<global-img>``,
  ``<row_i_col_j>``) and ``<end_of_utterance>``; like Llama 3 it adds BOS itself;
- the Idefics3 chat template (``User:<image>text<end_of_utterance>\\nAssistant:``), an
  ``Idefics3ImageProcessorPil`` that splits an image into up to 2x2 tiles of 32 pixels plus a
  global view, and an ``Idefics3Processor``.

The directory loads offline with ``AutoProcessor.from_pretrained(path)`` and
``Idefics3ForConditionalGeneration.from_pretrained(path)`` (transformers 5.x) and in vLLM with
``enforce_eager=True``. ~0.5M parameters; builds in about a second. The text it produces is noise;
token counts, batching and timing are real.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.models import building
from infra.models.building import Stamp, TokenizerSpec, read_json, token_id, write_json

ARCHITECTURE = "Idefics3ForConditionalGeneration"

#: Written last into a finished build; bumped whenever the built files change.
COMPLETION_MARKER = ".tiny-vlm-complete"
BUILD_VERSION = "1"

BOS = "<|begin_of_text|>"
END_OF_TEXT = "<|end_of_text|>"
PAD = "<|finetune_right_pad_id|>"
END_OF_UTTERANCE = "<end_of_utterance>"
FAKE_IMAGE = "<fake_token_around_image>"
IMAGE = "<image>"
GLOBAL_IMAGE = "<global-img>"
#: Idefics3's processor looks up tile tokens for grids of up to 6x6.
TILE_TOKENS: tuple[str, ...] = tuple(
    f"<row_{row}_col_{col}>" for row in range(1, 7) for col in range(1, 7)
)
SPECIAL_TOKENS: tuple[str, ...] = (
    BOS,
    END_OF_TEXT,
    PAD,
    END_OF_UTTERANCE,
    FAKE_IMAGE,
    IMAGE,
    GLOBAL_IMAGE,
    *TILE_TOKENS,
)

CORPUS: tuple[str, ...] = (
    "User: Describe the image in one sentence.",
    "Assistant: A photo of a cat sitting on a red sofa next to a window.",
    "What is in this picture? Answer briefly.",
    "There is a dog, a tree, and a blue car parked on the street.",
    "The image shows a mountain lake at sunset with orange clouds.",
    "Two people are walking along the beach while waves break on the sand.",
    "A bowl of fresh fruit: apples, bananas, oranges and grapes on a wooden table.",
    "The chart compares monthly revenue for 2023 and 2024; sales grew by 12 percent.",
    "A handwritten note reads: meet me at the station at 9:30 tomorrow morning.",
    "The screenshot contains a login form with an email field and a password field.",
    "The receipt lists coffee $3.50, a bagel $2.25 and a total of $5.75 including tax.",
    "Is there any text in the image? If so, transcribe it exactly.",
    "Count the objects on the table and list their colours.",
    "You are a helpful assistant. Look carefully and answer the user's question.",
)

#: Idefics3's chat template (Idefics3-8B-Llama3), also accepting plain-string contents.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}"
    "{{ ': ' + message['content'] }}"
    "{% else %}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] == 'image' %}{{ '<image>' }}{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "<end_of_utterance>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

VISION_HIDDEN = 64
VISION_LAYERS = 2
VISION_HEADS = 2
TILE_SIZE = 32
PATCH_SIZE = 8
SCALE_FACTOR = 2
#: ``<image>`` tokens per tile: ((TILE_SIZE / PATCH_SIZE) ** 2) / SCALE_FACTOR ** 2.
IMAGE_SEQ_LEN = (TILE_SIZE // PATCH_SIZE) ** 2 // SCALE_FACTOR**2
#: Images are resized to this longest edge, then split into TILE_SIZE tiles (at most 2x2).
LONGEST_EDGE = 2 * TILE_SIZE


@dataclass(frozen=True)
class TextSize:
    """The Llama text decoder's shape; head_dim must be one vLLM's CPU PagedAttention supports."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


#: "tiny" (~0.5M parameters) for tests; "bench" (~50M) for the batching benchmark, where a
#: decoding step must cost more than HTTP bookkeeping, as it does for real models on GPUs.
SIZES: dict[str, TextSize] = {
    "tiny": TextSize(hidden=128, layers=2, heads=4, kv_heads=2, intermediate=256),
    "bench": TextSize(hidden=768, layers=6, heads=12, kv_heads=4, intermediate=3072),
}
MAX_POSITIONS = 4096
#: Larger than Llama's 0.02, so the random model's logits are far from ties: greedy output then
#: varies instead of repeating one token, and does not flip between batched and serial runs.
TEXT_INIT_RANGE = 0.2

TOKENIZER = TokenizerSpec(
    corpus=CORPUS,
    special_tokens=SPECIAL_TOKENS,
    bos=BOS,
    eos=END_OF_UTTERANCE,
    pad=PAD,
    model_max_length=MAX_POSITIONS,
)


def _stamp(size: str) -> Stamp:
    version = BUILD_VERSION if size == "tiny" else f"{BUILD_VERSION}-{size}"
    return Stamp(marker=COMPLETION_MARKER, version=version)


def is_complete(path: Path, size: str = "tiny") -> bool:
    """True when ``path`` holds a finished build of the current :data:`BUILD_VERSION`."""
    return building.is_complete(path, _stamp(size))


def build_tiny_vlm(path: Path, size: str = "tiny") -> Path:
    """Build the tiny Idefics3 of ``size`` into ``path``, or find it there; return it.

    Idempotent and safe for concurrent builders (:func:`infra.models.building.build_once`): a
    non-empty, incomplete ``path`` raises ``FileExistsError``. Deterministic: same files, same
    weights. An unknown ``size`` raises ``ValueError``.
    """
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; one of {sorted(SIZES)}")
    return building.build_once(path, _stamp(size), lambda out: _write_model_dir(out, SIZES[size]))


def _write_model_dir(out: Path, size: TextSize) -> None:
    """Write tokenizer, processor, model and generation config into the empty directory ``out``."""
    tokenizer = building.train_tokenizer(TOKENIZER)
    with building.quiet_transformers():
        _save_model(out, tokenizer, size)
    _build_processor(tokenizer).save_pretrained(str(out))
    _pin_file_contents(out)


def _build_config(tokenizer: Any, size: TextSize) -> Any:
    from transformers import Idefics3Config, LlamaConfig
    from transformers.models.idefics3.configuration_idefics3 import Idefics3VisionConfig

    pad_id = token_id(tokenizer, PAD)
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=size.hidden,
        intermediate_size=size.intermediate,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        num_key_value_heads=size.kv_heads,
        head_dim=size.head_dim,
        max_position_embeddings=MAX_POSITIONS,
        rms_norm_eps=1e-5,
        initializer_range=TEXT_INIT_RANGE,
        bos_token_id=token_id(tokenizer, BOS),
        eos_token_id=token_id(tokenizer, END_OF_UTTERANCE),
        pad_token_id=pad_id,
        tie_word_embeddings=False,
    )
    vision = Idefics3VisionConfig(
        hidden_size=VISION_HIDDEN,
        intermediate_size=2 * VISION_HIDDEN,
        num_hidden_layers=VISION_LAYERS,
        num_attention_heads=VISION_HEADS,
        image_size=TILE_SIZE,
        patch_size=PATCH_SIZE,
    )
    return Idefics3Config(
        vision_config=vision,
        text_config=text,
        image_token_id=token_id(tokenizer, IMAGE),
        scale_factor=SCALE_FACTOR,
        pad_token_id=pad_id,
        tie_word_embeddings=False,
    )


def _generation_config(tokenizer: Any) -> Any:
    """Only the special ids: no sampling defaults, so "unset" means the engine's own default."""
    from transformers import GenerationConfig

    return GenerationConfig(
        bos_token_id=token_id(tokenizer, BOS),
        eos_token_id=[token_id(tokenizer, END_OF_UTTERANCE), token_id(tokenizer, END_OF_TEXT)],
        pad_token_id=token_id(tokenizer, PAD),
    )


def _save_model(out: Path, tokenizer: Any, size: TextSize) -> None:
    """Initialise the model from the shared seed (without disturbing the caller's RNG); save it."""
    from transformers import Idefics3ForConditionalGeneration

    config = _build_config(tokenizer, size)
    building.save_seeded_model(
        Idefics3ForConditionalGeneration, config, _generation_config(tokenizer), out
    )


def _build_processor(tokenizer: Any) -> Any:
    """An ``Idefics3Processor`` with a PIL image processor: 32-pixel tiles, 2x2 at most."""
    from transformers import Idefics3ImageProcessorPil, Idefics3Processor

    image_processor = Idefics3ImageProcessorPil(
        do_resize=True,
        size={"longest_edge": LONGEST_EDGE},
        do_image_splitting=True,
        max_image_size={"longest_edge": TILE_SIZE},
        do_rescale=True,
        do_normalize=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        do_pad=True,
    )
    return Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=IMAGE_SEQ_LEN,
        chat_template=CHAT_TEMPLATE,
    )


def _pin_file_contents(out: Path) -> None:
    """Keep the chat template in tokenizer_config.json too (AutoTokenizer users read it there)."""
    tokenizer_config = read_json(out / "tokenizer_config.json")
    tokenizer_config["chat_template"] = CHAT_TEMPLATE
    write_json(out / "tokenizer_config.json", tokenizer_config)
