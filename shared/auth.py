"""Who is calling: Firebase Auth ID tokens in production, a configured identity locally."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from shared.errors import ServiceUnavailable, Unauthenticated
from shared.settings import AuthSettings


@dataclass(frozen=True)
class Identity:
    uid: str


class IdentityVerifier(Protocol):
    def verify(self, authorization: str | None) -> Identity:
        """Identity from an Authorization header value; Unauthenticated if it proves none."""


def _bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the Authorization header must be 'Bearer <ID token>'")
    return token.strip()


class FirebaseVerifier:
    """Checks a Firebase Auth ID token: Google's signature, audience, issuer and expiry."""

    def __init__(self, project_id: str, transport: Any = None) -> None:
        self._project_id = project_id
        self._transport = transport
        """Fetches Google's signing certificates; the default is the requests transport, which
        caches nothing itself, so certificates are fetched per verification (cheap: HTTP
        caching headers apply at Google's edge)."""

    def verify(self, authorization: str | None) -> Identity:
        token = _bearer_token(authorization)
        if token is None:
            raise Unauthenticated("sign in: this request carries no Firebase ID token")
        if token.count(".") != 2:
            raise Unauthenticated("the ID token is not valid: it is not a JWT")
        # Imported here: only production needs the certificate fetcher and its transport.
        import google.auth.exceptions
        import google.auth.transport.requests
        from google.oauth2 import id_token

        transport = self._transport or google.auth.transport.requests.Request()
        try:
            claims = id_token.verify_firebase_token(  # type: ignore[no-untyped-call]
                token, transport, audience=self._project_id
            )
        except google.auth.exceptions.TransportError as error:
            raise ServiceUnavailable("cannot fetch the keys that verify ID tokens") from error
        except (ValueError, google.auth.exceptions.GoogleAuthError) as error:
            raise Unauthenticated(f"the ID token is not valid: {error}") from error
        issuer = f"https://securetoken.google.com/{self._project_id}"
        if not claims or claims.get("iss") != issuer:
            raise Unauthenticated("the ID token was not issued for this project")
        uid = claims.get("sub")
        if not uid:
            raise Unauthenticated("the ID token names no user")
        return Identity(uid=str(uid))


class DevelopmentVerifier:
    """For the local stack: no token means the configured developer; `Bearer dev:<uid>` acts
    as another user, so that ownership rules can be exercised without Firebase."""

    def __init__(self, default_uid: str) -> None:
        self._default_uid = default_uid

    def verify(self, authorization: str | None) -> Identity:
        token = _bearer_token(authorization)
        if token is None:
            return Identity(uid=self._default_uid)
        if not token.startswith("dev:") or len(token) == 4 or len(token) > 128:
            raise Unauthenticated("in development mode a token reads 'dev:<uid>'")
        return Identity(uid=token[4:])


def verifier_for(settings: AuthSettings, project_id: str) -> IdentityVerifier:
    if settings.mode == "development":
        return DevelopmentVerifier(settings.development_uid)
    return FirebaseVerifier(settings.firebase_project or project_id)
