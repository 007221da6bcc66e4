"""The shipped catalog's model names (services/catalog/models.toml), as the tests use them."""

from __future__ import annotations

TINY_MODEL = "loupe-tiny-mllama"
TINY_VLLM_MODEL = "loupe-tiny-vlm"
BENCH_VLLM_MODEL = "loupe-bench-vlm"
LLAMA_11B = "llama-3.2-11b-vision-instruct"
LLAMA_90B = "llama-3.2-90b-vision-instruct"
