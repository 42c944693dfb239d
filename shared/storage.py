"""Object storage behind a small Protocol, with the Cloud Storage implementation."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import google.auth
import google.auth.transport.requests
from google.api_core import exceptions as gexc
from google.auth import compute_engine
from google.auth.credentials import Credentials
from google.cloud.storage import Blob, Client
from google.oauth2 import service_account

from shared.clients import storage_client
from shared.deadlines import storage_call
from shared.errors import PayloadTooLarge
from shared.settings import StorageSettings, get_settings

UPLOAD_CHUNK_BYTES = 8 * 2**20
"""A file above 8 MiB goes up in resumable chunks of this size (a multiple of 256 KiB, as
they must be), each read from the file in turn: the client's default of 100 MiB would read a
whole stitched video into memory."""


@dataclass(frozen=True)
class StoredObject:
    bucket: str
    name: str
    generation: str
    size_bytes: int
    content_type: str | None


class BlobStore(Protocol):
    def put(self, bucket: str, name: str, data: bytes, content_type: str) -> StoredObject: ...

    def get(
        self, bucket: str, name: str, *, max_bytes: int, generation: str | None = None
    ) -> bytes | None:
        """The object's bytes (of that generation, if given), None if it does not exist;
        PayloadTooLarge past max_bytes."""

    def download(self, bucket: str, name: str, target: Path, *, max_bytes: int) -> bool:
        """Streams the object into a file; False if it does not exist; PayloadTooLarge past
        max_bytes."""

    def upload(self, bucket: str, name: str, source: Path, content_type: str) -> StoredObject:
        """Streams a file into an object."""

    def stat(self, bucket: str, name: str) -> StoredObject | None: ...

    def delete(self, bucket: str, name: str) -> None:
        """Deletes if present; deleting what is already gone is not an error."""

    def signed_put_url(
        self, bucket: str, name: str, *, content_type: str, max_bytes: int
    ) -> tuple[str, dict[str, str]]:
        """A URL the client PUTs the bytes to, and the headers it must send with them."""

    def signed_get_url(self, bucket: str, name: str) -> str: ...


class SigningCredentials:
    """The application default credentials that sign URLs through IAM, looked up once and
    refreshed only when google-auth says they are no longer valid (expired, or within its
    refresh margin of expiry), not once per URL. Thread-safe."""

    def __init__(
        self,
        default: Callable[[], tuple[Credentials, Any]] = google.auth.default,
        request: Any = None,
    ) -> None:
        self._default = default
        self._request = request
        self._credentials: Credentials | None = None
        self._lock = threading.Lock()

    def current(self) -> Credentials:
        with self._lock:
            if self._credentials is None:
                self._credentials, _ = self._default()
            if not self._credentials.valid:
                if self._request is None:
                    # One requests session for every refresh.
                    self._request = google.auth.transport.requests.Request()
                self._credentials.refresh(self._request)  # type: ignore[no-untyped-call]
            return self._credentials


class CloudStorage:
    """BlobStore on Google Cloud Storage (or its emulator, through STORAGE_EMULATOR_HOST)."""

    def __init__(
        self,
        client: Client,
        settings: StorageSettings,
        signing: SigningCredentials | None = None,
    ) -> None:
        self._client = client
        self._settings = settings
        self._signing = signing or SigningCredentials()

    def put(self, bucket: str, name: str, data: bytes, content_type: str) -> StoredObject:
        blob = self._client.bucket(bucket).blob(name)
        blob.upload_from_string(data, content_type=content_type, **storage_call())
        return _stored(blob)

    def get(
        self, bucket: str, name: str, *, max_bytes: int, generation: str | None = None
    ) -> bytes | None:
        blob = self._client.bucket(bucket).get_blob(
            name, generation=int(generation) if generation else None, **storage_call()
        )
        if blob is None:
            return None
        if blob.size is not None and blob.size > max_bytes:
            raise PayloadTooLarge(f"object is {blob.size} bytes, more than {max_bytes}")
        try:
            # The blob carries its generation: the read is pinned to the version measured above.
            data: bytes = blob.download_as_bytes(**storage_call())
        except gexc.NotFound:
            return None
        return data

    def download(self, bucket: str, name: str, target: Path, *, max_bytes: int) -> bool:
        blob = self._client.bucket(bucket).get_blob(name, **storage_call())
        if blob is None:
            return False
        if blob.size is not None and blob.size > max_bytes:
            raise PayloadTooLarge(f"object is {blob.size} bytes, more than {max_bytes}")
        try:
            blob.download_to_filename(str(target), **storage_call())
        except gexc.NotFound:
            return False
        return True

    def upload(self, bucket: str, name: str, source: Path, content_type: str) -> StoredObject:
        blob = self._client.bucket(bucket).blob(name, chunk_size=UPLOAD_CHUNK_BYTES)
        blob.upload_from_filename(str(source), content_type=content_type, **storage_call())
        return _stored(blob)

    def stat(self, bucket: str, name: str) -> StoredObject | None:
        blob = self._client.bucket(bucket).get_blob(name, **storage_call())
        return None if blob is None else _stored(blob)

    def delete(self, bucket: str, name: str) -> None:
        with contextlib.suppress(gexc.NotFound):
            self._client.bucket(bucket).blob(name).delete(**storage_call())

    def signed_put_url(
        self, bucket: str, name: str, *, content_type: str, max_bytes: int
    ) -> tuple[str, dict[str, str]]:
        # The content type and the length range are signed headers: Cloud Storage refuses a PUT
        # whose headers differ, so a client cannot upload something other than it announced.
        headers = {
            "content-type": content_type,
            "x-goog-content-length-range": f"0,{max_bytes}",
        }
        url = (
            self._client.bucket(bucket)
            .blob(name)
            .generate_signed_url(
                version="v4",
                method="PUT",
                expiration=timedelta(seconds=self._settings.signed_url_ttl_s),
                content_type=content_type,
                headers={"x-goog-content-length-range": headers["x-goog-content-length-range"]},
                **self._signing_arguments(),
            )
        )
        return url, headers

    def signed_get_url(self, bucket: str, name: str) -> str:
        url: str = (
            self._client.bucket(bucket)
            .blob(name)
            .generate_signed_url(
                version="v4",
                method="GET",
                expiration=timedelta(seconds=self._settings.signed_url_ttl_s),
                **self._signing_arguments(),
            )
        )
        return url

    def _signing_arguments(self) -> dict[str, object]:
        arguments: dict[str, object] = {}
        if self._settings.signed_url_endpoint:
            arguments["api_access_endpoint"] = self._settings.signed_url_endpoint
        if self._settings.signer_key_file:
            arguments["credentials"] = _key_file_signer(self._settings.signer_key_file)
        else:
            # On Google Cloud the function's credentials hold no private key: sign through the
            # IAM signBlob API with the service account's own identity and a valid token.
            credentials = self._signing.current()
            if isinstance(credentials, compute_engine.Credentials):
                arguments["service_account_email"] = credentials.service_account_email
                arguments["access_token"] = credentials.token
            else:
                arguments["credentials"] = credentials
        return arguments


@lru_cache(maxsize=4)
def _key_file_signer(path: str) -> service_account.Credentials:
    return service_account.Credentials.from_service_account_file(path)  # type: ignore[no-untyped-call, no-any-return]


def _stored(blob: Blob) -> StoredObject:
    return StoredObject(
        bucket=blob.bucket.name,
        name=blob.name,
        generation=str(blob.generation),
        size_bytes=int(blob.size or 0),
        content_type=blob.content_type,
    )


def default_blob_store() -> BlobStore:
    return CloudStorage(storage_client(), get_settings().storage)
