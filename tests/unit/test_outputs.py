"""Comparing two runs' outputs: equal up to the rounding of published scores, no further."""

from streamer.records import SCORE_TOLERANCE, published_score
from streamer.replay.offline import Outputs


def outputs(score: float) -> Outputs:
    return Outputs({"t1": {"score": score}}, {}, {}, [])


def test_one_step_in_the_last_published_decimal_is_not_a_difference() -> None:
    # 0.9926115 falls on either side of the rounding boundary after float32 noise
    a, b = published_score(0.99261149), published_score(0.99261151)
    assert (a, b) == (0.992611, 0.992612)
    assert outputs(a).differences(outputs(b)) == []


def test_a_larger_score_difference_is_reported() -> None:
    found = outputs(0.5).differences(outputs(0.5 + 5 * SCORE_TOLERANCE))
    assert len(found) == 1 and found[0].startswith("scores[t1]")
    assert outputs(0.5).differences(outputs(0.5000015), score_tolerance=0.0) != []


def test_any_other_field_that_differs_is_reported_numbers_beyond_the_tolerance() -> None:
    alert = {"transaction_id": "t1", "score": 0.9, "reasons": [{"code": "amount", "value": 262.1}]}
    ranked = {"event_id": "e1", "source": "model", "items": [{"item_id": "a", "score": 1.0}]}

    def runs(alert_change: dict, ranked_change: dict) -> list[str]:  # type: ignore[type-arg]
        return Outputs({}, {"t1": alert}, {"e1": ranked}, []).differences(
            Outputs({}, {"t1": {**alert, **alert_change}}, {"e1": {**ranked, **ranked_change}}, []))

    assert runs({}, {}) == []
    assert runs({"reasons": []}, {}) == ["alerts[t1].reasons: [{'code': 'amount', 'value': 262.1}] != []"]
    assert runs({"card_id": "c9"}, {}) == ["alerts[t1].card_id: None != 'c9'"]
    assert runs({}, {"source": "popular"}) == ["recommendations[e1].source: 'model' != 'popular'"]
    assert runs({}, {"items": [{"item_id": "a", "score": -50.0}]}) == ["recommendations[e1].items[0].score: 1.0 != -50.0"]
    assert runs({}, {"items": [{"item_id": "a", "score": 1.0 + SCORE_TOLERANCE / 2}]}) == []
