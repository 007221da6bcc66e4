"""Queue positions in the dispatcher's order, from its backlog snapshot (real Redis and SQLite)."""

from __future__ import annotations

import redis

from services.jobs.backlog import KEY_PREFIX, Backlog, RedisBacklogBoard
from services.types import Priority
from tests.conftest import auth
from tests.helpers import chat_body
from tests.support.images import make_image

HIGH, NORMAL, LOW = Priority.HIGH, Priority.NORMAL, Priority.LOW


def test_a_position_counts_the_broker_higher_classes_and_each_other_keys_turns():
    backlog = Backlog({HIGH: {"x": 3}, NORMAL: {"a": 300, "b": 1, "c": 2}, LOW: {"d": 9}}, 4)
    # b's only job: one turn of each other key in its class, after the broker and the high class.
    assert backlog.position(NORMAL, "b", own_ahead=0) == 4 + 3 + 0 + 1 + 1
    # a's 11th job: c runs out of turns, b too.
    assert backlog.position(NORMAL, "a", own_ahead=10) == 4 + 3 + 10 + 1 + 2
    assert backlog.position(HIGH, "x", own_ahead=2) == 4 + 2
    assert backlog.position(LOW, "d", own_ahead=0) == 4 + 3 + 303


def test_the_board_round_trips_a_snapshot_that_expires(broker_url):
    board = RedisBacklogBoard.from_url(broker_url)
    client = redis.Redis.from_url(broker_url)
    try:
        snapshot = Backlog({NORMAL: {"a": 2}, HIGH: {"b": 0}}, handed_out=3)
        board.publish("inference", snapshot)
        assert board.read("inference") == snapshot
        assert board.read("elsewhere") is None
        assert 0 < client.ttl(KEY_PREFIX + "inference") <= 30
    finally:
        client.close()
        board.close()


def test_a_polled_position_follows_the_dispatchers_fair_order(client, api, user_key, other_key):
    def submit(key: str) -> str:
        body = chat_body(make_image())
        return str(client.post("/v1/jobs", json=body, headers=auth(key)).json["id"])

    mine = [submit(user_key) for _ in range(6)]
    theirs = submit(other_key)
    assert api.dispatch() == 4  # no worker: the margin; fair order takes theirs among them

    def position(job_id: str, key: str) -> int:
        return int(client.get(f"/v1/jobs/{job_id}", headers=auth(key)).json["queue_position"])

    assert client.get(f"/v1/jobs/{theirs}", headers=auth(other_key)).json["status"] == "queued"
    # Three of mine are waiting behind the four in the broker, one after the other.
    assert [position(job_id, user_key) for job_id in mine[3:]] == [4, 5, 6]
