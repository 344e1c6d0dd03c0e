"""Reasons attached to a fraud alert, in words and numbers.

Post-processing after scoring: each candidate reason is a feature that stands out
against the training population (its z-score from the manifest's feature statistics)
or against the card's own habits. The strongest few become the alert's ``reasons``:
``{"code", "text", "value"}``, e.g. "amount 5.1 × the card's 30-day average".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from streamer.features.fraud import FEATURE_NAMES

_AT = {name: i for i, name in enumerate(FEATURE_NAMES)}
#: A further reason is listed only this many standard deviations above the population.
NOTABLE = 1.0


def alert_reasons(
    features: Sequence[float], mean: np.ndarray, std: np.ndarray, limit: int = 3
) -> list[dict[str, Any]]:
    f = list(features)
    z = (np.asarray(f) - mean) / np.where(std > 0, std, 1.0)
    candidates: list[tuple[float, dict[str, Any]]] = []

    amount = f[_AT["TX_AMOUNT"]]
    card_avg = f[_AT["CUSTOMER_ID_AVG_AMOUNT_30DAY_WINDOW"]]
    ratio = amount / card_avg if card_avg > 0 else 1.0
    strength = max(float(z[_AT["TX_AMOUNT"]]), ratio - 1.0)
    candidates.append((strength, {
        "code": "amount",
        "text": f"amount {amount:.2f} is {ratio:.1f} × the card's 30-day average {card_avg:.2f}",
        "value": round(amount, 2),
    }))
    for days in (1, 7, 30):
        name = f"TERMINAL_ID_RISK_{days}DAY_WINDOW"
        risk = f[_AT[name]]
        if risk > 0:
            candidates.append((float(z[_AT[name]]), {
                "code": f"terminal_risk_{days}d",
                "text": f"terminal fraud rate over {days} days {risk:.2f}",
                "value": round(risk, 4),
            }))
    for days in (1, 7):
        name = f"CUSTOMER_ID_NB_TX_{days}DAY_WINDOW"
        count = f[_AT[name]]
        candidates.append((float(z[_AT[name]]), {
            "code": f"card_velocity_{days}d",
            "text": f"{count:.0f} transaction{'s' if count != 1 else ''} on the card in {days} day{'s' if days > 1 else ''}",
            "value": count,
        }))
    if f[_AT["TX_DURING_NIGHT"]]:
        candidates.append((float(z[_AT["TX_DURING_NIGHT"]]), {
            "code": "night", "text": "transaction at night (00:00-06:59 UTC)", "value": 1.0,
        }))
    candidates.sort(key=lambda c: -c[0])
    # The strongest reason always; the others only when they really stand out.
    strong = [reason for strength, reason in candidates[1:] if strength >= NOTABLE]
    return [candidates[0][1], *strong][:limit]
