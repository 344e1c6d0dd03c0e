"""Golden tests: committed captures replayed offline and through the worker.

Expected outputs live in ``tests/replay/expected/``. After an intended model or feature
change, regenerate them with::

    streamer replay --offline tests/replay/captures/fraud.jsonl.gz --expected-out tests/replay/expected/fraud.json
    streamer replay --offline tests/replay/captures/clicks.jsonl.gz --expected-out tests/replay/expected/clicks.json

Tolerances: fraud scores within 1e-6 (they are rounded to 6 decimals on output);
recommendation lists, alert sets and dead letters identical.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamer.replay.offline import Outputs

HERE = Path(__file__).resolve().parent
CAPTURES = ("fraud", "clicks")


def expected(name: str) -> Outputs:
    return Outputs.from_json(json.loads((HERE / "expected" / f"{name}.json").read_text()))


@pytest.mark.parametrize("name", CAPTURES)
@pytest.mark.parametrize("batch_size", [1, 64, 1000])
def test_offline_replay_matches_the_golden_outputs(streamer_offline, name: str, batch_size: int) -> None:  # type: ignore[no-untyped-def]
    got = streamer_offline([HERE / "captures" / f"{name}.jsonl.gz"], batch_size=batch_size)
    assert got.scores or got.recommendations
    assert got.differences(expected(name)) == []


@pytest.mark.kafka
@pytest.mark.redis
@pytest.mark.slow
def test_worker_replay_matches_the_golden_outputs(streamer_replay) -> None:  # type: ignore[no-untyped-def]
    captures = [HERE / "captures" / f"{name}.jsonl.gz" for name in CAPTURES]
    got = streamer_replay(captures, batch={"max_size": 16, "max_wait_ms": 5})
    want = expected("fraud")
    clicks = expected("clicks")
    want.recommendations = clicks.recommendations
    want.dead_letters = sorted(want.dead_letters + clicks.dead_letters)
    assert got.differences(want) == []
