"""The tiny random Llama 3.2 Vision: loads offline, real layout, idempotent and race-safe builds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from transformers import AutoProcessor, MllamaForConditionalGeneration

from infra.models.tiny_mllama import (
    CHAT_TEMPLATE,
    COMPLETION_MARKER,
    build_tiny_mllama,
    is_complete,
)


def test_loads_offline_with_the_real_classes(tiny_mllama_path: Path) -> None:
    processor = AutoProcessor.from_pretrained(tiny_mllama_path, local_files_only=True)
    model = MllamaForConditionalGeneration.from_pretrained(tiny_mllama_path, local_files_only=True)

    tokenizer = processor.tokenizer
    assert tokenizer.convert_tokens_to_ids("<|image|>") == len(tokenizer) - 1
    assert model.config.image_token_index == len(tokenizer) - 1
    assert model.config.text_config.vocab_size == len(tokenizer) - 1
    assert tokenizer.model_input_names == ["input_ids", "attention_mask"]
    assert tokenizer.eos_token == "<|eot_id|>"
    assert tokenizer.pad_token == "<|finetune_right_pad_id|>"
    eos_ids = set(model.generation_config.eos_token_id)
    assert {
        tokenizer.convert_tokens_to_ids(t) for t in ("<|eot_id|>", "<|end_of_text|>")
    } <= eos_ids
    assert processor.image_processor.size == {"height": 56, "width": 56}
    assert processor.image_processor.max_image_tiles == 4
    assert sum(p.numel() for p in model.parameters()) < 2_000_000


def test_chat_template_has_the_llama_3_2_vision_shape(tiny_mllama_path: Path) -> None:
    processor = AutoProcessor.from_pretrained(tiny_mllama_path, local_files_only=True)
    conversation = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe."}]}
    ]

    prompt = processor.apply_chat_template(conversation, add_generation_prompt=True)

    assert prompt == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n<|image|>Describe."
        "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_config_carries_rope_settings_for_transformers_4_and_5(tiny_mllama_path: Path) -> None:
    config = json.loads((tiny_mllama_path / "config.json").read_text())
    text = config["text_config"]
    assert text["rope_scaling"]["rope_type"] == "llama3"
    assert text["rope_theta"] == 500000.0
    assert text["rope_parameters"]["rope_type"] == "llama3"
    assert text["rope_parameters"]["rope_theta"] == 500000.0
    assert (text["num_attention_heads"], text["num_key_value_heads"]) == (4, 2)
    assert text["cross_attention_layers"] == [1]
    assert config["vision_config"]["image_size"] == 56
    tokenizer_config = json.loads((tiny_mllama_path / "tokenizer_config.json").read_text())
    assert tokenizer_config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert tokenizer_config["chat_template"] == CHAT_TEMPLATE
    assert "image_processor" not in json.loads(
        (tiny_mllama_path / "processor_config.json").read_text()
    )


def test_build_is_idempotent(tiny_mllama_path: Path) -> None:
    weights = tiny_mllama_path / "model.safetensors"
    before = weights.stat().st_mtime_ns

    assert build_tiny_mllama(tiny_mllama_path) == tiny_mllama_path
    assert weights.stat().st_mtime_ns == before


def test_concurrent_builders_produce_one_identical_model(
    tmp_path: Path, tiny_mllama_path: Path
) -> None:
    # Two processes race for the same path: both build, one rename wins, the other keeps it.
    target = tmp_path / "tiny-mllama"
    command = [sys.executable, "-m", "infra.models", "build", "--models-dir", str(tmp_path)]
    command.append(target.name)
    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    builders = [subprocess.Popen(command, cwd=root, env=env) for _ in range(2)]

    assert [builder.wait(timeout=120) for builder in builders] == [0, 0]
    assert is_complete(target)
    # No staging directories left behind.
    assert [p.name for p in tmp_path.iterdir()] == ["tiny-mllama"]
    # Deterministic across processes: the same weights as this session's build.
    assert (target / "model.safetensors").read_bytes() == (
        tiny_mllama_path / "model.safetensors"
    ).read_bytes()


def test_threads_in_one_process_build_identical_weights(
    tmp_path: Path, tiny_mllama_path: Path
) -> None:
    targets = [tmp_path / "a", tmp_path / "b"]
    with ThreadPoolExecutor(max_workers=2) as pool:
        assert list(pool.map(build_tiny_mllama, targets)) == targets
    expected = (tiny_mllama_path / "model.safetensors").read_bytes()
    assert all((t / "model.safetensors").read_bytes() == expected for t in targets)


def test_incomplete_directory_is_not_overwritten(tmp_path: Path) -> None:
    target = tmp_path / "model"
    target.mkdir()
    (target / "config.json").write_text("{}")  # no completion marker: a half-written model

    with pytest.raises(FileExistsError):
        build_tiny_mllama(target)
    assert not (target / COMPLETION_MARKER).exists()
