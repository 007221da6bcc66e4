"""The worker processes' roots: each builds only what its tasks use, every field required."""

from __future__ import annotations

import dataclasses
import types
import typing

import pytest

from services.api.root import ApiRoot
from services.catalog.registry import build_registry
from workers.context import WorkerContext, build_worker_context
from workers.light import LightContext, build_light_context
from workers.roots import WorkerRoots
from workers.webhooks import WebhookContext


@pytest.mark.parametrize("root", [ApiRoot, WorkerContext, LightContext, WebhookContext])
def test_no_root_has_an_optional_field(root):
    hints = typing.get_type_hints(root)
    for field in dataclasses.fields(root):
        hint = hints[field.name]
        optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(
            None
        ) in typing.get_args(hint)
        assert not optional, f"{root.__name__}.{field.name} is optional"


def test_the_inference_root_builds_and_closes_without_loading_a_model(settings):
    ctx = build_worker_context(settings)
    try:
        assert (
            ctx.registry.get(build_registry(settings).default_model).name
            == build_registry(settings).default_model
        )
    finally:
        ctx.close()


def test_the_light_root_keeps_every_job_when_retention_is_zero(settings_for):
    ctx = build_light_context(settings_for(retention_seconds=0))
    try:
        assert not ctx.retention
    finally:
        ctx.close()


def test_a_process_builds_each_root_once_and_afresh_after_close(settings):
    roots = WorkerRoots(settings)
    try:
        light = roots.light()
        assert roots.light() is light
        roots.close()
        assert roots.light() is not light
    finally:
        roots.close()


class _Beat:
    """Stands in for a started ``Heartbeat``: records that it was stopped."""

    def __init__(self) -> None:
        self.stopped = 0

    def stop(self) -> None:
        self.stopped += 1


def test_the_holder_keeps_one_heartbeat_and_stops_it_at_close(settings):
    roots = WorkerRoots(settings)
    first, second = _Beat(), _Beat()
    roots.keep_heartbeat(first)
    roots.keep_heartbeat(second)  # a second worker_ready replaces the first
    assert (first.stopped, second.stopped) == (1, 0)

    roots.close()
    roots.close()

    assert second.stopped == 1
