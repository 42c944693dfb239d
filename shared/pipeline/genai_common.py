"""What the google-genai providers share: the client, token counts, refusals, prices."""

from __future__ import annotations

import logging

from google import genai
from google.auth.credentials import Credentials
from google.genai import types

from shared.pipeline.genai_retry import RetryPolicy, Unusable
from shared.pipeline.prices import is_priced

logger = logging.getLogger(__name__)

# Finish reasons that mean the model will not make this content: asking again costs tokens and
# returns the same refusal.
REFUSALS = frozenset(
    {
        "SAFETY",
        "PROHIBITED_CONTENT",
        "BLOCKLIST",
        "SPII",
        "RECITATION",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    }
)


def make_client(
    *,
    api_key: str | None,
    base_url: str | None,
    policy: RetryPolicy,
    vertexai: bool = False,
    project: str | None = None,
    location: str | None = None,
    credentials: Credentials | None = None,
) -> genai.Client:
    """A client that makes one attempt per call (the providers own the retries; see
    genai_retry) and tells the server the attempt's deadline. No network until the first
    request."""
    return genai.Client(
        api_key=api_key,
        vertexai=vertexai,
        project=project,
        location=location,
        credentials=credentials,
        http_options=types.HttpOptions(
            base_url=base_url,
            # Milliseconds.
            timeout=max(1, round(policy.timeout_s * 1000)),
            # Setting the options (rather than leaving them unset) also stops the client's
            # hidden retry of refused connections after a 1-10 s sleep.
            retry_options=types.HttpRetryOptions(attempts=1),
        ),
    )


def token_counts(response: types.GenerateContentResponse) -> tuple[int, int]:
    """(input, output) tokens of one answered call; thinking is billed as output."""
    usage = response.usage_metadata
    if usage is None:
        return 0, 0
    output = (usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0)
    return usage.prompt_token_count or 0, output


def finish_reason(response: types.GenerateContentResponse) -> str:
    if not response.candidates:
        return ""
    reason = response.candidates[0].finish_reason
    return str(getattr(reason, "value", None) or reason or "")


def check_answered(response: types.GenerateContentResponse, what: str) -> None:
    """Raises Unusable when the reply carries no content to read: a blocked prompt or a
    refusal (for good), or no candidate at all (worth asking again)."""
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason is not None:
        reason = getattr(feedback.block_reason, "value", feedback.block_reason)
        raise Unusable(f"the prompt was blocked ({reason})", retryable=False)
    if not response.candidates:
        raise Unusable("the reply had no candidates", retryable=True)
    finish = finish_reason(response)
    if finish in REFUSALS:
        raise Unusable(f"the model declined to make the {what} ({finish})", retryable=False)


def warn_if_unpriced(model: str) -> None:
    if not is_priced(model):
        logger.warning("No list price for %s: its calls will record cost 0", model)


class GenaiProvider:
    """The client's lifecycle for one provider: created at first use, closed by `aclose`."""

    name: str

    def __init__(self, name: str, policy: RetryPolicy) -> None:
        self.name = name
        self.policy = policy
        self._client: genai.Client | None = None
        warn_if_unpriced(name)

    def _make_client(self) -> genai.Client:
        raise NotImplementedError

    @property
    def client(self) -> genai.Client:
        if self._client is None:
            self._client = self._make_client()
        return self._client

    async def aclose(self) -> None:
        """Closes the client's connections; the provider opens new ones if used again."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.aio.aclose()
