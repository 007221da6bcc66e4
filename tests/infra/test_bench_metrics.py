"""The /metrics benchmark: a small run of the real harness prints its table and JSON line."""

from __future__ import annotations

import json

from infra.bench import metrics


def test_bench_metrics_small_run_reports_latencies(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["--queued", "300", "--finished", "50", "--scrapes", "5", "--json-out", str(out)]

    assert metrics.main(argv) == 0

    stdout = capsys.readouterr().out
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result == json.loads(out.read_text())
    assert (result["bench"], result["queued"], result["scrapes"]) == ("metrics", 300, 5)
    assert all(result[k] > 0 for k in ("metrics_p50_ms", "metrics_p95_ms", "admin_p50_ms"))
    assert "/metrics" in stdout
