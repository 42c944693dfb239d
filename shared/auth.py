"""Who is calling: Firebase Auth ID tokens in production, a configured identity locally."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
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


_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)", re.IGNORECASE)


def freshness_s(headers: Mapping[str, str], now: float | None = None) -> float:
    """How long an HTTP answer may be reused, from its caching headers (RFC 9111, the parts a
    certificate endpoint uses): `max-age` less `Age`, else `Expires` less `Date`; none for
    `no-store`/`no-cache` or without either header."""
    lowered = {key.lower(): value for key, value in headers.items()}
    control = lowered.get("cache-control", "")
    if re.search(r"(?:^|,)\s*(?:no-store|no-cache)\b", control, re.IGNORECASE):
        return 0.0
    age = float(lowered["age"]) if lowered.get("age", "").strip().isdigit() else 0.0
    match = _MAX_AGE.search(control)
    if match:
        return max(0.0, int(match.group(1)) - age)
    try:
        expires = parsedate_to_datetime(lowered["expires"]).timestamp()
        date = parsedate_to_datetime(lowered["date"]).timestamp() if "date" in lowered else None
    except (KeyError, TypeError, ValueError):
        return 0.0
    return max(0.0, expires - (date if date is not None else now or time.time()) - age)


class CachingTransport:
    """A google-auth transport (`google.auth.transport.Request`) that keeps each successful
    GET for as long as its caching headers allow. Google's certificate endpoints send
    `Cache-Control: max-age` (hours) and publish a new key well before they sign with it, so
    ID token verification fetches the certificates once per max-age instead of per request.
    google-auth's id_token module caches nothing itself and suggests a cache-aware session;
    this is that, without a dependency. Thread-safe: one fetch at a time refills the cache."""

    def __init__(
        self, transport: Any = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._transport = transport
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, Any]] = {}

    def _inner(self) -> Any:
        if self._transport is None:
            # Imported here: only production needs requests; one session, reused.
            import google.auth.transport.requests

            self._transport = google.auth.transport.requests.Request()
        return self._transport

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> Any:
        if method.upper() != "GET" or body is not None:
            return self._inner()(url, method=method, body=body, headers=headers, **kwargs)
        with self._lock:
            now = self._clock()
            cached = self._cache.get(url)
            if cached is not None and now < cached[0]:
                return cached[1]
            response = self._inner()(url, method=method, headers=headers, **kwargs)
            fresh_s = freshness_s(response.headers) if response.status == 200 else 0.0
            if fresh_s > 0:
                self._cache[url] = (now + fresh_s, response)
            else:
                self._cache.pop(url, None)
            return response


class FirebaseVerifier:
    """Checks a Firebase Auth ID token: Google's signature, audience, issuer and expiry."""

    def __init__(
        self,
        project_id: str,
        transport: Any = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._project_id = project_id
        self._transport = CachingTransport(transport, clock=clock)
        """Fetches Google's signing certificates (the requests transport by default) and
        keeps them for as long as the answer's Cache-Control allows."""

    def verify(self, authorization: str | None) -> Identity:
        token = _bearer_token(authorization)
        if token is None:
            raise Unauthenticated("sign in: this request carries no Firebase ID token")
        if token.count(".") != 2:
            raise Unauthenticated("the ID token is not valid: it is not a JWT")
        # Imported here: only production needs the certificate fetcher.
        import google.auth.exceptions
        from google.oauth2 import id_token

        try:
            claims = id_token.verify_firebase_token(  # type: ignore[no-untyped-call]
                token, self._transport, audience=self._project_id
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
