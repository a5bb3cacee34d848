"""How long to wait before retrying a transient failure: one rule for every service."""

from __future__ import annotations

import random

__all__ = ["MAX_BACKOFF", "backoff"]

MAX_BACKOFF = 60.0


def backoff(retries: int) -> float:
    """Seconds before retry number `retries + 1`: doubling from 1 s up to a minute, each
    scaled by a random factor in [0.5, 1] so that many workers hit by one outage do not all
    come back at once."""
    return min(MAX_BACKOFF, 2.0 ** retries) * random.uniform(0.5, 1.0)
