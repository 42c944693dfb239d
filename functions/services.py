"""The objects a function instance needs, built once per instance on first use."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from shared.auth import IdentityVerifier, verifier_for
from shared.clients import firestore_client
from shared.registry import Registry
from shared.repositories.manifests import ManifestRepository
from shared.repositories.snapshots import SnapshotRepository
from shared.settings import Settings, get_settings
from shared.storage import BlobStore, default_blob_store
from shared.uploads import UploadIngest
from shared.usage import ManifestUsage


@dataclass(frozen=True)
class Services:
    settings: Settings
    registry: Registry
    uploads: UploadIngest
    blobs: BlobStore
    verifier: IdentityVerifier
    usage: ManifestUsage


@lru_cache(maxsize=1)
def services() -> Services:
    settings = get_settings()
    repository = ManifestRepository(firestore_client())
    registry = Registry(repository)
    blobs = default_blob_store()
    return Services(
        settings=settings,
        registry=registry,
        uploads=UploadIngest(repository, registry, blobs, settings.storage),
        blobs=blobs,
        verifier=verifier_for(settings.auth, settings.project_id),
        usage=ManifestUsage(registry, repository, SnapshotRepository(firestore_client())),
    )
