"""Fast token estimates for cost estimates before a provider reports real usage."""

from __future__ import annotations

import math


def estimate_tokens(text: str) -> int:
    """About four characters a token for English text and code; never zero for non-empty text."""
    return math.ceil(len(text) / 4) if text else 0
