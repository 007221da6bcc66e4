"""infra/ monitoring configs parse, and every loupe_* metric they use exists in /metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from services.admin.prometheus import METRIC_NAMES
from services.auth.keys import Role
from tests.conftest import auth
from tests.support.keys import new_key

INFRA = Path(__file__).resolve().parents[2] / "infra"
_METRIC = re.compile(r"\bloupe_[a-z_]+\b")
# Suffixes Prometheus adds to a family's samples.
_SUFFIXES = ("_bucket", "_count", "_sum")


def family_of(name: str) -> str:
    for suffix in _SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in METRIC_NAMES:
            return name.removesuffix(suffix)
    return name


def strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for v in node.values() for s in strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in strings(v)]
    return []


def used_metrics(node: Any) -> set[str]:
    return {family_of(m) for s in strings(node) for m in _METRIC.findall(s)}


@pytest.fixture
def exposed(api, client) -> set[str]:
    """Family names of a real /metrics scrape (as the parser names them)."""
    admin = new_key(api.keys, "scraper", Role.ADMIN).token
    text = client.get("/metrics", headers=auth(admin)).get_data(as_text=True)
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name if family.type != "counter" else family.name + "_total")
    return names


def test_exposed_families_match_the_documented_names(exposed):
    assert exposed == set(METRIC_NAMES)


def test_prometheus_config_scrapes_metrics_and_loads_the_alerts():
    config = yaml.safe_load((INFRA / "prometheus" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert config["rule_files"] == ["alerts.yml"]
    assert (INFRA / "prometheus" / "alerts.yml").exists()


def test_alerts_cover_queue_age_and_no_workers_with_known_metrics(exposed):
    rules = yaml.safe_load((INFRA / "prometheus" / "alerts.yml").read_text())
    by_name = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    assert "loupe_queue_oldest_age_seconds" in by_name["LoupeQueueStalled"]["expr"]
    assert "loupe_workers_online" in by_name["LoupeNoWorkersOnline"]["expr"]
    assert used_metrics(rules) <= exposed


def test_grafana_dashboard_is_json_and_uses_known_metrics(exposed):
    dashboard = json.loads((INFRA / "grafana" / "loupe-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert exprs
    assert used_metrics(exprs) <= exposed
    assert {"loupe_queue_depth", "loupe_workers_online"} <= used_metrics(exprs)


def test_keda_scaled_object_scales_workers_on_queue_lists_and_known_metrics(exposed):
    scaled = yaml.safe_load((INFRA / "k8s" / "keda-scaledobject.yaml").read_text())
    assert (scaled["apiVersion"], scaled["kind"]) == ("keda.sh/v1alpha1", "ScaledObject")
    triggers = scaled["spec"]["triggers"]
    assert {t["metadata"]["listName"] for t in triggers if t["type"] == "redis"} <= {
        "inference", "inference:5", "inference:9",
    }  # fmt: skip
    (prom,) = [t for t in triggers if t["type"] == "prometheus"]
    assert used_metrics(prom["metadata"]["query"]) <= exposed
    assert "loupe_queue_depth" in prom["metadata"]["query"]
