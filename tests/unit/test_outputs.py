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
