"""The pre-commit configuration is valid and runs the checks `make test` runs."""

import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]


def test_the_config_validates() -> None:
    config = REPO / ".pre-commit-config.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "pre_commit", "validate-config", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_it_runs_ruff_mypy_import_contracts_and_the_subject_check() -> None:
    config = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())
    ids = {hook["id"] for repo in config["repos"] for hook in repo["hooks"]}
    assert ids == {"ruff", "ruff-format", "mypy", "lint-imports", "commit-subject"}
