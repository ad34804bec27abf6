"""Prices and context windows of known models, and the token estimate used before a call is sent.

Prices are US dollars per million tokens (input, output), from the providers' public price lists; the
user can add or override entries with RLM_MCP_PRICES. A budget in dollars is only as exact as this table,
so a model without a price is refused while a dollar budget is set, rather than counted as free.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from rlm_mcp.units import CHARS_PER_TOKEN

MESSAGE_OVERHEAD_TOKENS = 16

# Matched by longest prefix, so dated snapshots ("claude-haiku-4-5-20251001") find their family.
PRICES: dict[str, tuple[float, float]] = {
    "claude-haiku-4-5": (1.0, 5.0),
    "claude-3-5-haiku": (0.8, 4.0),
    "claude-sonnet-4": (3.0, 15.0),
    "claude-3-7-sonnet": (3.0, 15.0),
    "claude-opus-4-5": (5.0, 25.0),
    "claude-opus-4": (15.0, 75.0),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.0),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.0, 8.0),
    "gpt-5-nano": (0.05, 0.40),
    "gpt-5-mini": (0.25, 2.0),
    "gpt-5": (1.25, 10.0),
}

WINDOWS: dict[str, int] = {
    "claude-": 200_000,
    "gpt-4o": 128_000,
    "gpt-4.1": 1_047_576,
    "gpt-5": 400_000,
}


# The Claude Code CLI's model aliases, priced (for estimates and budgets) as the models they stand for today.
ALIASES: dict[str, str] = {"haiku": "claude-haiku-4-5", "sonnet": "claude-sonnet-4", "opus": "claude-opus-4-5"}


def _longest_prefix(table: Mapping[str, object], model: str) -> str | None:
    model = ALIASES.get(model, model)
    matches = [prefix for prefix in table if model.startswith(prefix)]
    return max(matches, key=len) if matches else None


def price_of(model: str, overrides: Mapping[str, tuple[float, float]] | None = None) -> tuple[float, float] | None:
    if overrides and model in overrides:
        return overrides[model]
    prefix = _longest_prefix(PRICES, model)
    return PRICES[prefix] if prefix else None


def window_of(model: str, fallback: int) -> int:
    prefix = _longest_prefix(WINDOWS, model)
    return WINDOWS[prefix] if prefix else fallback


def cost_usd(price: tuple[float, float] | None, input_tokens: int, output_tokens: int) -> float | None:
    if price is None:
        return None
    return (input_tokens * price[0] + output_tokens * price[1]) / 1_000_000


def estimate_tokens(*texts: str | None) -> int:
    chars = sum(len(text) for text in texts if text)
    return math.ceil(chars / CHARS_PER_TOKEN) + MESSAGE_OVERHEAD_TOKENS


# A model id as providers spell a known family's snapshot: the family, then a date or a release tag.
_SNAPSHOT_SUFFIX = re.compile(r"(?:-\d{8}|-latest|@\d{8})?")


def is_known_model(name: str) -> bool:
    """Whether `name` is a model id of a family this table knows (an alias, or a family and its snapshot
    date): what may be said of a model where free text may not (telemetry without texts)."""
    if name in ALIASES:
        return True
    families = [family for family in (*PRICES, *WINDOWS) if name.startswith(family)]
    return any(_SNAPSHOT_SUFFIX.fullmatch(name[len(family) :]) for family in families)
