"""The objects a function instance needs, built once per instance on first use."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from shared.auth import IdentityVerifier, verifier_for
from shared.clients import firestore_client
from shared.face_links import FaceLinks
from shared.manifesting.jobs import ManifestingJobs
from shared.pipeline.checkpoints import CheckpointService
from shared.pipeline.face_service import FaceFinder, IdTokens, ModelServiceFaces
from shared.pipeline.forks import ForkService
from shared.pipeline.identity import IdentityChecks
from shared.pipeline.projects import ProjectService
from shared.pipeline.providers import providers_for
from shared.pipeline.runner import PipelineRunner
from shared.registry import Registry
from shared.repositories.artifacts import ArtifactIndex
from shared.repositories.jobs import JobRepository
from shared.repositories.manifests import ManifestRepository
from shared.repositories.projects import ProjectRepository
from shared.repositories.snapshots import SnapshotRepository
from shared.settings import IdentitySettings, Settings, get_settings
from shared.storage import BlobStore, default_blob_store
from shared.tasks import default_dispatcher
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
    manifesting: ManifestingJobs
    face_links: FaceLinks
    projects: ProjectService
    projects_repo: ProjectRepository
    pipeline: PipelineRunner
    checkpoints: CheckpointService
    forks: ForkService


def identity_checks(settings: Settings, blobs: BlobStore, index: ArtifactIndex) -> IdentityChecks:
    """Keyframes checked through the model service's faces API, when one is configured; the
    ID token (Cloud Run service-to-service auth) is one per process, shared by every client."""
    config: IdentitySettings = settings.identity
    url = config.model_service_url
    tokens = IdTokens(url) if url and config.id_token else None

    def finder() -> FaceFinder:
        return ModelServiceFaces(config, tokens)

    return IdentityChecks(
        config, blobs, settings.storage.media_bucket, index, finder if url else None
    )


@lru_cache(maxsize=1)
def services() -> Services:
    settings = get_settings()
    repository = ManifestRepository(firestore_client())
    registry = Registry(repository)
    blobs = default_blob_store()
    db = firestore_client()
    projects_repo = ProjectRepository(db)
    usage = ManifestUsage(registry, repository, SnapshotRepository(db))
    index = ArtifactIndex(db)
    pipeline = PipelineRunner(
        projects_repo,
        usage.read_snapshot,
        blobs,
        default_dispatcher,
        providers_for,
        settings,
        index,
        identity_checks(settings, blobs, index),
    )
    project_service = ProjectService(projects_repo, usage, pipeline)
    checkpoint_service = CheckpointService(
        project_service, projects_repo, pipeline, blobs, settings
    )
    uploads = UploadIngest(repository, registry, blobs, settings.storage)
    jobs = JobRepository(db)
    manifesting = ManifestingJobs(registry, repository, jobs, default_dispatcher, settings.tasks)
    forks = ForkService(project_service, projects_repo, pipeline, repository, usage, uploads,
                        manifesting, jobs, settings.tasks)  # fmt: skip
    pipeline.awaiting = forks.advance
    return Services(
        settings=settings,
        registry=registry,
        uploads=uploads,
        blobs=blobs,
        verifier=verifier_for(settings.auth, settings.project_id),
        usage=usage,
        manifesting=manifesting,
        face_links=FaceLinks(registry, repository, jobs),
        projects=project_service,
        projects_repo=projects_repo,
        pipeline=pipeline,
        checkpoints=checkpoint_service,
        forks=forks,
    )
