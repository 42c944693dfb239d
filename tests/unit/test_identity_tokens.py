"""The ID token the identity check calls the model service with: one per audience, fetched
again only shortly before it expires."""

from __future__ import annotations

from shared.pipeline.face_service import TOKEN_MARGIN_S, IdTokens


def test_one_id_token_serves_every_call_until_shortly_before_it_expires() -> None:
    now = [1000.0]
    fetched: list[str] = []

    def fetch(audience: str) -> str:
        fetched.append(audience)
        return f"token-{len(fetched)}"

    tokens = IdTokens("https://models.run.app", fetch=fetch, expiry=lambda _t: now[0] + 3600,
                      clock=lambda: now[0])  # fmt: skip

    assert tokens.token() == tokens.token() == "token-1"
    now[0] += 3600 - TOKEN_MARGIN_S - 1
    assert tokens.token() == "token-1"
    now[0] += 2
    assert tokens.token() == "token-2"
    assert fetched == ["https://models.run.app"] * 2
