"""List prices of the Gemini models the describers may use, to record what a call cost.

These are Google's published list prices for the Gemini Developer API, paid tier, standard
(not batch) requests, in USD per one million tokens. They change: update them from
https://ai.google.dev/gemini-api/docs/pricing when a model is added or a price moves. Billing
is the source of truth; these figures make costs visible per asset and per job.

Output prices cover thinking tokens too: Google bills them as output. Models priced by tier
(2.5 Pro above 200k prompt tokens) carry the lower tier only, because a single image with
instructions stays far below it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelPrice:
    input_per_million: float
    """USD per 1M prompt tokens (text, image and video input)."""
    output_per_million: float
    """USD per 1M output tokens, thinking included."""


GEMINI_PRICES: dict[str, ModelPrice] = {
    "gemini-2.5-pro": ModelPrice(input_per_million=1.25, output_per_million=10.00),
    "gemini-2.5-flash": ModelPrice(input_per_million=0.30, output_per_million=2.50),
    "gemini-2.5-flash-lite": ModelPrice(input_per_million=0.10, output_per_million=0.40),
    "gemini-2.0-flash": ModelPrice(input_per_million=0.10, output_per_million=0.40),
    "gemini-2.0-flash-lite": ModelPrice(input_per_million=0.075, output_per_million=0.30),
}


def price_for(model: str) -> ModelPrice | None:
    """The list price of a model, accepting the "models/" prefix and pinned versions
    ("gemini-2.0-flash-001"); None when the table does not know it."""
    name = model.removeprefix("models/")
    # The longest known name that prefixes the model wins, so "gemini-2.5-flash-lite-…" is
    # never priced as "gemini-2.5-flash".
    for known in sorted(GEMINI_PRICES, key=len, reverse=True):
        if name == known or name.startswith(known + "-"):
            return GEMINI_PRICES[known]
    return None


def cost_usd(model: str, input_tokens: int, output_tokens: int) -> float | None:
    """What a call with these token counts cost at list price; None for an unknown model."""
    price = price_for(model)
    if price is None:
        return None
    return (
        input_tokens * price.input_per_million + output_tokens * price.output_per_million
    ) / 1_000_000
