"""The batching benchmark: a tiny run of the real harness, and its pure helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra.bench import batching
from infra.localstack.stack import StackPaths

RESULT_KEYS = {
    "bench", "engine", "model", "n", "max_tokens", "concurrency", "service_rps",
    "engine_batch_rps", "engine_serial_rps", "ratio_service_to_engine", "batch_speedup",
    "service_vs_serial",
}  # fmt: skip
RATES = ("service_rps", "engine_batch_rps", "engine_serial_rps")


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_bench_batching_smoke_prints_positive_rates(
    tmp_path: Path, models_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out" / "bench.json"
    argv = [
        "--model", "loupe-tiny-mllama", "--n", "4", "--max-tokens", "8",
        "--models-dir", str(models_dir), "--json-out", str(out),
    ]  # fmt: skip

    assert batching.main(argv) == 0

    stdout = capsys.readouterr().out
    result = json.loads(stdout.strip().splitlines()[-1])
    assert set(result) == RESULT_KEYS
    assert result["bench"] == "batching"
    assert result["engine"] == "transformers"
    assert (result["model"], result["n"], result["max_tokens"]) == ("loupe-tiny-mllama", 4, 8)
    assert result["concurrency"] == 4
    assert all(result[key] > 0 for key in RATES), result
    assert result["ratio_service_to_engine"] == pytest.approx(
        result["service_rps"] / result["engine_batch_rps"], abs=0.01
    )
    assert "service (API)" in stdout
    assert "engine serial" in stdout
    assert json.loads(out.read_text()) == result


def test_bench_unknown_model_fails_before_starting_anything(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert batching.main(["--model", "no-such-model", "--n", "1", "--max-tokens", "1"]) == 1
    assert "no-such-model" in capsys.readouterr().err


def test_bench_infers_batches_from_completion_clusters() -> None:
    completed = [10.0, 11.3, 11.31, 11.35, 12.9, 12.95]

    assert batching.infer_batches(completed, gap=0.1) == [(1, 10.0), (3, 11.35), (2, 12.95)]


def test_bench_plan_runs_one_named_worker_at_the_benchs_concurrency(tmp_path: Path) -> None:
    config = batching.BenchConfig(
        model="loupe-tiny-mllama", n=8, max_tokens=4, concurrency=7, models_dir=tmp_path
    )
    plan = batching.bench_plan(config)
    env = {**plan.overrides, "LOUPE_API_THREADS": "16"}
    api, worker, dispatcher = plan.app_parts(StackPaths.at(tmp_path), env)

    assert plan.overrides["LOUPE_DEFAULT_MODEL"] == "loupe-tiny-mllama"
    assert plan.overrides["LOUPE_MODELS_DIR"] == str(tmp_path.resolve())
    assert list(plan.keys) == ["LOUPE_API_KEY"]
    assert (api.name, worker.name, dispatcher.name) == ("api", "worker", "dispatcher")
    argv = worker.argv
    assert argv[argv.index("--concurrency") + 1] == "7"
    assert argv[argv.index("--prefetch-multiplier") + 1] == "1"
    assert argv[argv.index("--pool") + 1] == "threads"
    assert argv[argv.index("-n") + 1] == "loupe-bench@%h"


def test_bench_job_problems_require_exactly_max_tokens() -> None:
    good = {"id": "j", "status": "succeeded", "usage": {"completion_tokens": 8}}
    short = {"id": "j", "status": "succeeded", "usage": {"completion_tokens": 3}}
    failed = {"id": "j", "status": "failed", "error": {"code": "x"}}

    assert batching.job_problems(good, 8) == []
    assert "3 tokens" in batching.job_problems(short, 8)[0]
    assert "failed" in batching.job_problems(failed, 8)[0]
