"""Fair order, as pure functions: priority classes, water-filling between keys, limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.dispatch.fair import KeyLoad, Waiting, fair_order, take
from services.types import Priority

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def jobs(owner: str, n: int, priority: Priority = Priority.NORMAL, start: int = 0) -> list[Waiting]:
    """``n`` jobs of ``owner``, one second apart from ``start`` seconds."""
    return [
        Waiting(f"{owner}{i}", owner, priority, T0 + timedelta(seconds=start + i)) for i in range(n)
    ]


def owners(chosen: list[Waiting]) -> str:
    return "".join(job.owner_id for job in chosen)


def test_a_late_key_is_served_before_a_big_backlog_gets_more():
    backlog = jobs("a", 300)
    late = jobs("b", 1, start=1000)
    chosen = fair_order({"a": backlog, "b": late}, {"a": KeyLoad(4, 4)}, 4)
    assert owners(chosen) == "baaa"


def test_keys_alternate_when_equally_served_older_head_first():
    chosen = fair_order({"a": jobs("a", 5), "b": jobs("b", 5, start=1)}, {}, 6)
    assert owners(chosen) == "ababab"


def test_the_least_served_key_is_topped_up_first():
    loads = {"a": KeyLoad(3, 3), "b": KeyLoad(0, 0)}
    chosen = fair_order({"a": jobs("a", 5), "b": jobs("b", 5, start=10)}, loads, 5)
    assert owners(chosen) == "bbbab"


def test_a_key_at_its_limit_gets_nothing_and_room_goes_to_others():
    loads = {"a": KeyLoad(1, 1, limit=2), "b": KeyLoad(0, 0)}
    chosen = fair_order({"a": jobs("a", 5), "b": jobs("b", 5, start=10)}, loads, 6)
    assert owners(chosen).count("a") == 1 and len(chosen) == 6


def test_the_limit_counts_jobs_in_flight_on_every_model():
    loads = {"a": KeyLoad(on_queue=0, anywhere=2, limit=2)}
    assert fair_order({"a": jobs("a", 3)}, loads, 3) == []


def test_higher_priority_classes_go_first_and_their_picks_count_in_the_next():
    waiting = jobs("a", 3) + jobs("b", 2, Priority.HIGH, start=50) + jobs("c", 2, Priority.LOW)
    chosen = take(waiting, {"a": KeyLoad(limit=2), "b": KeyLoad(limit=1)}, 10)
    assert [(j.owner_id, j.priority) for j in chosen[:1]] == [("b", Priority.HIGH)]
    assert owners(chosen) == "baacc"


def test_take_stops_at_room_and_keeps_each_keys_age_order():
    chosen = take(jobs("a", 4) + jobs("b", 4, start=100), {}, 3)
    assert [j.id for j in chosen] == ["a0", "b0", "a1"]
