"""The catalog file and a deployment's models file: exact values, the merge rule, clear errors."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from services.catalog.loader import load_catalog
from services.catalog.spec import EngineArgs, ModelSpec
from services.errors import ConfigurationError
from services.types import PriceCard
from tests.support.models import BENCH_VLLM_MODEL, LLAMA_11B, LLAMA_90B, TINY_MODEL, TINY_VLLM_MODEL

MODELS_DIR = Path("/srv/models")
FREE = PriceCard()
VISION_ARGS = EngineArgs(max_num_seqs=32, max_model_len=2048, enforce_eager=True, dtype="float32")


def _tiny_vlm(name: str, directory: str) -> ModelSpec:
    return ModelSpec(
        name=name, engine="vllm", weights_path=f"/srv/models/{directory}",
        architecture="Idefics3ForConditionalGeneration", max_images=1, max_output_tokens=1024,
        default_max_tokens=32, context_length=2048, price=FREE, owned_by="loupe",
        system_prompt_with_images=True, engine_args=VISION_ARGS,
    )  # fmt: skip


def _llama(name: str, hub_id: str, price: PriceCard, args: EngineArgs) -> ModelSpec:
    return ModelSpec(
        name=name, engine="vllm", weights_path=hub_id, local_weights=False,
        architecture="MllamaForConditionalGeneration", max_images=1, max_output_tokens=4096,
        default_max_tokens=512, context_length=8192, price=price, engine_args=args,
    )  # fmt: skip


#: What the catalog held when it was Python code; the data file must keep every value.
SHIPPED = [
    ModelSpec(
        name=TINY_MODEL, engine="transformers", weights_path="/srv/models/tiny-mllama",
        architecture="MllamaForConditionalGeneration", max_images=1, max_output_tokens=2048,
        default_max_tokens=32, context_length=4096, price=FREE, owned_by="loupe",
        engine_args=EngineArgs(max_num_seqs=16),
    ),
    _tiny_vlm(TINY_VLLM_MODEL, "tiny-vlm"),
    _tiny_vlm(BENCH_VLLM_MODEL, "bench-vlm"),
    _llama(
        LLAMA_11B, "meta-llama/Llama-3.2-11B-Vision-Instruct",
        PriceCard(Decimal("0.18"), Decimal("0.18"), Decimal("0.0005058")),
        EngineArgs(max_num_seqs=16, max_model_len=8192, enforce_eager=True, dtype="bfloat16"),
    ),
    _llama(
        LLAMA_90B, "meta-llama/Llama-3.2-90B-Vision-Instruct",
        PriceCard(Decimal("0.35"), Decimal("0.40"), Decimal("0.0005058")),
        EngineArgs(max_num_seqs=32, max_model_len=8192, tensor_parallel_size=8, dtype="bfloat16"),
    ),
]  # fmt: skip

NEW_MODEL = """
[[models]]
name = "acme-vision"
engine = "transformers"
path = "acme"
architecture = "MllamaForConditionalGeneration"
owned_by = "acme"
limits = { max_images = 2, max_output_tokens = 64, default_max_tokens = 8, context_length = 512 }
price = { input_per_million = "1.25", output_per_million = "2.5", per_image = "0.01" }
"""


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_shipped_catalog_holds_every_model_with_its_exact_values():
    specs = load_catalog(MODELS_DIR).models

    assert specs == SHIPPED
    assert [str(s.price.input_per_million) for s in specs] == ["0", "0", "0", "0.18", "0.35"]
    assert str(specs[-1].price.output_per_million) == "0.40"  # the decimal string, not a float


def test_a_relative_path_is_under_the_models_dir_and_an_absolute_one_is_kept(tmp_path):
    absolute = tmp_path / "weights"
    text = NEW_MODEL + NEW_MODEL.replace("acme-vision", "acme-two").replace(
        '"acme"', f'"{absolute}"'
    )

    *_, added, second = load_catalog(MODELS_DIR, _file(tmp_path, text)).models

    assert (added.weights_path, added.local_weights) == ("/srv/models/acme", True)
    assert second.weights_path == str(absolute)


def test_the_models_file_adds_a_complete_model_after_the_shipped_ones(tmp_path):
    specs = load_catalog(MODELS_DIR, _file(tmp_path, NEW_MODEL)).models

    assert specs[:-1] == SHIPPED
    added = specs[-1]
    assert (added.name, added.engine, added.owned_by, added.max_images) == (
        "acme-vision", "transformers", "acme", 2
    )  # fmt: skip
    assert added.price == PriceCard(Decimal("1.25"), Decimal("2.5"), Decimal("0.01"))
    assert added.engine_args == EngineArgs()  # no [engine_args]: the defaults
    assert added.system_prompt_with_images is False


def test_the_models_file_patches_a_shipped_model_table_by_table(tmp_path):
    text = f"""
[[models]]
name = "{LLAMA_90B}"
path = "/weights/llama-90b"
engine_args = {{ tensor_parallel_size = 4 }}
price = {{ per_image = "0.001" }}
limits = {{ max_output_tokens = 2048 }}
"""
    by_name = {s.name: s for s in load_catalog(MODELS_DIR, _file(tmp_path, text)).models}

    big = by_name[LLAMA_90B]
    assert (big.weights_path, big.local_weights) == ("/weights/llama-90b", True)
    assert big.engine_args == EngineArgs(
        max_num_seqs=32, max_model_len=8192, tensor_parallel_size=4, dtype="bfloat16"
    )
    assert big.price == PriceCard(Decimal("0.35"), Decimal("0.40"), Decimal("0.001"))
    assert (big.max_output_tokens, big.context_length) == (2048, 8192)
    assert list(by_name) == [s.name for s in SHIPPED]  # same models, same order
    assert by_name[LLAMA_11B] == SHIPPED[3]


def test_a_patch_can_move_local_weights_to_a_hub_id(tmp_path):
    text = f'[[models]]\nname = "{TINY_MODEL}"\nhub_id = "acme/tiny"\n'

    tiny = load_catalog(MODELS_DIR, _file(tmp_path, text)).models[0]

    assert (tiny.weights_path, tiny.local_weights) == ("acme/tiny", False)


_NEW = NEW_MODEL.strip()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_NEW.replace('"transformers"', '"onnx"'), r"unknown engine 'onnx' \(one of transformers, vllm\)"),
        (_NEW.replace('architecture = "MllamaForConditionalGeneration"\n', ""), "missing architecture"),
        (_NEW.replace("limits = { max_images = 2, ", "limits = { "), r"\[limits\]: missing max_images"),
        (_NEW.replace('"1.25"', "1.25"), r'\[price\]: input_per_million must be a decimal string such as "0.35", got 1.25'),
        (_NEW.replace('"1.25"', '"-1"'), r"\[price\]: input_per_million must be a non-negative decimal string"),
        (_NEW.replace('"1.25"', '"lots"'), "input_per_million must be a non-negative decimal string, got 'lots'"),
        (_NEW.replace('"1.25"', '"NaN"'), "input_per_million must be a non-negative decimal string"),
        (_NEW + '\ncolour = "red"', r"model 'acme-vision': unknown keys \['colour'\]"),
        (_NEW.replace("context_length = 512", "context_length = 512, cost = 1"), r"\[limits\]: unknown keys \['cost'\]"),
        (_NEW.replace('per_image = "0.01"', 'per_image = "0.01", per_token = "1"'), r"\[price\]: unknown keys"),
        (_NEW + "\nengine_args = { batch = 4 }", r"\[engine_args\]: unknown keys \['batch'\]"),
        (_NEW + "\nengine_args = { max_num_seqs = true }", "max_num_seqs must be a positive integer, got True"),
        (_NEW + "\nengine_args = { max_num_seqs = 0 }", "max_num_seqs must be a positive integer, got 0"),
        (_NEW + "\nengine_args = { gpu_memory_utilization = 1.5 }", r"must be a number in \(0, 1\]"),
        (_NEW + "\nengine_args = { limit_mm_per_prompt = { image = -1 } }", "non-negative integers"),
        (_NEW + '\nhub_id = "acme/x"', "needs exactly one of path .* and hub_id"),
        (_NEW.replace('path = "acme"\n', ""), "needs exactly one of path .* and hub_id"),
        (_NEW + '\nsystem_prompt_with_images = "yes"', "must be true or false, got 'yes'"),
        (_NEW + "\n" + _NEW, "model 'acme-vision' is listed twice"),
        ('[[models]]\nengine = "vllm"', "a \\[\\[models\\]\\] table has no name"),
        ("models = 3", r"models must be an array of tables"),
        ('default = "x"\n' + _NEW, r"unknown keys \['default'\]"),
        ("[[models]\n", "not valid TOML"),
        (f'[[models]]\nname = "{TINY_MODEL}"\nengine = "onnx"', f"patched by .*model '{TINY_MODEL}': unknown engine"),
    ],
)  # fmt: skip
def test_a_bad_models_file_is_a_clear_configuration_error(tmp_path, text, message):
    path = _file(tmp_path, text)

    with pytest.raises(ConfigurationError, match=message) as raised:
        load_catalog(MODELS_DIR, path)
    assert str(path) in str(raised.value)


def test_an_unreadable_models_file_is_a_configuration_error(tmp_path):
    with pytest.raises(ConfigurationError, match=r"models file .*/absent.toml: cannot read it"):
        load_catalog(MODELS_DIR, tmp_path / "absent.toml")


def test_the_catalog_names_its_default_model_and_a_models_file_may_change_it(tmp_path):
    assert load_catalog(MODELS_DIR).default_model == TINY_MODEL

    catalog = load_catalog(MODELS_DIR, _file(tmp_path, f'default_model = "{LLAMA_11B}"\n'))

    assert catalog.default_model == LLAMA_11B


def test_a_models_file_may_add_a_model_and_make_it_the_default(tmp_path):
    catalog = load_catalog(MODELS_DIR, _file(tmp_path, 'default_model = "acme-vision"\n' + _NEW))

    assert catalog.default_model == "acme-vision"
    assert catalog.models[-1].name == "acme-vision"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('default_model = "nope"\n', "default_model 'nope' is not a model of the catalog"),
        ("default_model = 3\n", "default_model must be a model name, got 3"),
    ],
)
def test_a_default_model_outside_the_catalog_is_refused(tmp_path, text, message):
    with pytest.raises(ConfigurationError, match=message):
        load_catalog(MODELS_DIR, _file(tmp_path, text))
