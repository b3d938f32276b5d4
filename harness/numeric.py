"""Small numeric helpers shared by tasks, judges and the training outer loops."""

from __future__ import annotations

import math


def sigmoid(x: float) -> float:
    """1 / (1 + e^-x) without overflow for any finite x (math.exp overflows past ~709)."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)
