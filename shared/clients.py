"""Google clients, built once per process and on first use (never at import time)."""

from __future__ import annotations

from functools import lru_cache

from google.cloud import firestore
from google.cloud.storage import Client as StorageClient

from shared.settings import get_settings


@lru_cache(maxsize=1)
def firestore_client() -> firestore.Client:
    # FIRESTORE_EMULATOR_HOST, when set, is honoured by the client itself.
    return firestore.Client(project=get_settings().project_id)


@lru_cache(maxsize=1)
def storage_client() -> StorageClient:
    # STORAGE_EMULATOR_HOST, when set, is honoured by the client itself (anonymous credentials).
    return StorageClient(project=get_settings().project_id)


def reset_clients() -> None:
    """Forget cached clients, for tests that change the environment."""
    firestore_client.cache_clear()
    storage_client.cache_clear()
