"""What production fetches and refreshes, cached with its expiry: Google's token-signing
certificates (by the answer's Cache-Control) and the credentials that sign URLs (refreshed
only when google-auth says they are no longer valid). Offline: fake endpoints count calls."""

from __future__ import annotations

import datetime
import json
from types import SimpleNamespace
from typing import Any

import pytest
from google.auth import _helpers, compute_engine
from google.auth import credentials as ga_credentials

from shared.auth import CachingTransport, FirebaseVerifier, freshness_s
from shared.errors import ServiceUnavailable
from shared.settings import StorageSettings
from shared.storage import CloudStorage, SigningCredentials
from tests.unit.test_auth import CertificateServer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingCertificateServer(CertificateServer):
    """Google's certificate endpoint as it answers: with a max-age (and an Age when an edge
    cache served it)."""

    def __init__(self, cache_control: str = "public, max-age=3600", age: int = 0) -> None:
        super().__init__()
        self.cache_control = cache_control
        self.age = age
        self.fetches = 0
        self.fail = False

    def __call__(self, url: str, method: str = "GET", **kwargs: object) -> object:
        self.fetches += 1
        if self.fail:
            import google.auth.exceptions

            raise google.auth.exceptions.TransportError("offline")
        headers = {"Cache-Control": self.cache_control, "Content-Type": "application/json"}
        if self.age:
            headers["Age"] = str(self.age)
        return SimpleNamespace(
            status=200, headers=headers, data=json.dumps({"k1": self.cert_pem}).encode()
        )


def _token(server: CertificateServer, uid: str = "uid-7") -> str:
    return server.token(aud="proj", iss="https://securetoken.google.com/proj", sub=uid)


def test_a_hundred_verifications_fetch_the_certificates_once() -> None:
    server, clock = CountingCertificateServer(), Clock()
    verifier = FirebaseVerifier("proj", transport=server, clock=clock)
    for i in range(100):
        assert verifier.verify(f"Bearer {_token(server, f'u{i}')}").uid == f"u{i}"
        clock.now += 1  # 100 s in all, well within max-age
    assert server.fetches == 1


def test_the_certificates_are_fetched_again_once_max_age_has_passed() -> None:
    server, clock = CountingCertificateServer("public, max-age=600"), Clock()
    verifier = FirebaseVerifier("proj", transport=server, clock=clock)
    token = _token(server)
    verifier.verify(f"Bearer {token}")
    clock.now += 599
    verifier.verify(f"Bearer {token}")
    assert server.fetches == 1
    clock.now += 1
    for _ in range(100):
        verifier.verify(f"Bearer {token}")
    assert server.fetches == 2


def test_an_edge_cached_answer_is_fresh_only_for_what_its_age_leaves() -> None:
    server, clock = CountingCertificateServer("public, max-age=600", age=590), Clock()
    verifier = FirebaseVerifier("proj", transport=server, clock=clock)
    token = _token(server)
    verifier.verify(f"Bearer {token}")
    clock.now += 9
    verifier.verify(f"Bearer {token}")
    assert server.fetches == 1
    clock.now += 1
    verifier.verify(f"Bearer {token}")
    assert server.fetches == 2


@pytest.mark.parametrize("cache_control", ["no-store", "no-cache, max-age=600", ""])
def test_an_answer_that_may_not_be_kept_is_fetched_every_time(cache_control: str) -> None:
    server = CountingCertificateServer(cache_control)
    verifier = FirebaseVerifier("proj", transport=server, clock=Clock())
    for _ in range(3):
        verifier.verify(f"Bearer {_token(server)}")
    assert server.fetches == 3


def test_a_failed_fetch_is_not_cached_and_is_a_service_unavailable() -> None:
    server, clock = CountingCertificateServer(), Clock()
    verifier = FirebaseVerifier("proj", transport=server, clock=clock)
    server.fail = True
    with pytest.raises(ServiceUnavailable):
        verifier.verify(f"Bearer {_token(server)}")
    server.fail = False
    assert verifier.verify(f"Bearer {_token(server)}").uid == "uid-7"
    assert server.fetches == 2


def test_only_successful_gets_are_kept() -> None:
    calls: list[tuple[str, str]] = []

    def transport(url: str, method: str = "GET", **kwargs: object) -> object:
        calls.append((url, method))
        status = 500 if url.endswith("/broken") else 200
        return SimpleNamespace(status=status, headers={"cache-control": "max-age=60"}, data=b"")

    caching = CachingTransport(transport, clock=Clock())
    for _ in range(2):
        caching("https://x/certs")
        caching("https://x/broken")
        caching("https://x/certs", method="POST", body=b"{}")
    assert calls.count(("https://x/certs", "GET")) == 1
    assert calls.count(("https://x/broken", "GET")) == 2
    assert calls.count(("https://x/certs", "POST")) == 2


def test_freshness_follows_expires_when_there_is_no_max_age() -> None:
    headers = {"Date": "Mon, 06 Jan 2025 10:00:00 GMT", "Expires": "Mon, 06 Jan 2025 11:00:00 GMT"}
    assert freshness_s(headers) == 3600
    assert freshness_s({"Expires": "not a date"}) == 0
    assert freshness_s({"Cache-Control": "public, max-age=21600, must-revalidate"}) == 21600


# Signed URLs: the credentials that sign through IAM.


class FakeCredentials(ga_credentials.Credentials):  # type: ignore[misc]
    """Application default credentials whose refresh is counted; tokens last an hour."""

    def __init__(self) -> None:
        super().__init__()
        self.refreshes = 0

    def refresh(self, request: Any) -> None:
        self.refreshes += 1
        self.token = f"token-{self.refreshes}"
        self.expiry = _helpers.utcnow() + datetime.timedelta(hours=1)


class RecordingBlob:
    def __init__(self, calls: list[dict[str, Any]]) -> None:
        self._calls = calls

    def generate_signed_url(self, **kwargs: Any) -> str:
        self._calls.append(kwargs)
        return f"https://signed.example/{len(self._calls)}"


class RecordingClient:
    """Stands in for the storage client: records what each signed URL is signed with."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def bucket(self, name: str) -> Any:
        return SimpleNamespace(blob=lambda blob_name: RecordingBlob(self.calls))


def _store(default: Any, request: Any = None) -> tuple[CloudStorage, RecordingClient]:
    client = RecordingClient()
    settings = StorageSettings(signer_key_file=None)
    return CloudStorage(client, settings, SigningCredentials(default, request)), client  # type: ignore[arg-type]


def test_a_hundred_signed_urls_look_credentials_up_and_refresh_them_once() -> None:
    credentials, lookups = FakeCredentials(), []

    def default() -> tuple[Any, str]:
        lookups.append(1)
        return credentials, "proj"

    store, client = _store(default, request=object())
    for i in range(50):
        store.signed_get_url("media", f"o{i}")
        store.signed_put_url("uploads", f"o{i}", content_type="image/png", max_bytes=10)
    assert len(client.calls) == 100
    assert (len(lookups), credentials.refreshes) == (1, 1)
    assert all(call["credentials"] is credentials for call in client.calls)


def test_expired_credentials_are_refreshed_once_then_reused() -> None:
    credentials = FakeCredentials()
    store, _ = _store(lambda: (credentials, "proj"), request=object())
    store.signed_get_url("media", "a")
    credentials.expiry = _helpers.utcnow() - datetime.timedelta(seconds=1)
    for _ in range(100):
        store.signed_get_url("media", "a")
    assert credentials.refreshes == 2
    # Within google-auth's refresh margin of expiry counts as expired too: no URL is signed
    # with a token about to lapse.
    credentials.expiry = _helpers.utcnow() + datetime.timedelta(seconds=30)
    store.signed_get_url("media", "a")
    assert credentials.refreshes == 3


class MetadataServer:
    """The Compute Engine metadata server, as a function's credentials reach it."""

    def __init__(self) -> None:
        self.token_requests = 0

    def __call__(self, url: str, method: str = "GET", **kwargs: object) -> object:
        json_headers = {"content-type": "application/json", "metadata-flavor": "Google"}
        if url.split("?")[0].endswith("/token"):
            self.token_requests += 1
            body = {"access_token": f"at-{self.token_requests}", "expires_in": 3599}
            return SimpleNamespace(status=200, headers=json_headers, data=json.dumps(body).encode())
        if "/service-accounts/default/" in url:
            body = {"email": "fn@proj.iam.gserviceaccount.com", "scopes": ["cloud-platform"]}
            return SimpleNamespace(status=200, headers=json_headers, data=json.dumps(body).encode())
        return SimpleNamespace(status=404, headers={"content-type": "text/plain"}, data=b"")


def test_on_google_cloud_a_hundred_urls_sign_through_iam_with_one_token() -> None:
    metadata = MetadataServer()
    credentials = compute_engine.Credentials()
    store, client = _store(lambda: (credentials, "proj"), request=metadata)
    for i in range(100):
        store.signed_get_url("media", f"o{i}")
    assert metadata.token_requests == 1
    assert {call["service_account_email"] for call in client.calls} == {
        "fn@proj.iam.gserviceaccount.com"
    }
    assert {call["access_token"] for call in client.calls} == {"at-1"}
