"""Settings for every deployable, read from the environment once and on demand.

Nothing reads the environment at import time: `get_settings()` builds the object on first use,
and tests call `get_settings.cache_clear()` after changing the environment.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class StorageSettings(BaseModel):
    upload_bucket: str = "framefork-uploads"
    """Bucket that clients upload into; its finalize events drive the upload trigger."""
    media_bucket: str = "framefork-media"
    """Bucket for what the backend derives (normalised images, thumbnails); no trigger on it."""
    max_upload_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    max_image_pixels: int = Field(default=40_000_000, gt=0)
    """Decoded-size ceiling that stops decompression bombs before Pillow allocates them."""
    thumbnail_px: int = Field(default=256, ge=16, le=2048)
    signed_url_ttl_s: int = Field(default=900, ge=60, le=7 * 24 * 3600)
    signer_key_file: str | None = None
    """Service-account key used to sign URLs locally. In Google Cloud it stays unset and URLs
    are signed through the IAM signBlob API with the function's own service account."""
    signed_url_endpoint: str | None = None
    """Host that signed URLs point at; unset means storage.googleapis.com."""


class AuthSettings(BaseModel):
    mode: Literal["firebase", "development"] = "firebase"
    development_uid: str = "dev-user"
    """The identity of requests that carry no token when mode is development."""
    firebase_project: str | None = None


class ApiSettings(BaseModel):
    cors_origins: list[str] = Field(default_factory=list)
    max_body_bytes: int = Field(default=64 * 1024, gt=0)
    """JSON bodies larger than this are refused with 413 before they are parsed."""
    page_size_default: int = Field(default=20, ge=1, le=100)
    page_size_max: int = Field(default=100, ge=1, le=1000)


class TasksSettings(BaseModel):
    location: str = "us-central1"
    manifesting_queue: str = "manifesting"
    pipeline_queue: str = "pipeline"
    manifesting_url: str = "http://127.0.0.1:3000/tasks/run_job"
    """Where manifesting tasks are delivered: the model service's job endpoint."""
    pipeline_url: str = "http://127.0.0.1:8082/"
    """Where pipeline stage tasks are delivered: the run_stage function."""
    invoker_service_account: str | None = None
    """Tasks carry an OIDC token of this account in Google Cloud; unset locally."""
    fork_upload_deadline_s: int = Field(default=3600, ge=10)
    """How long a fork waits for its new images before it fails naming the missing ones."""
    fork_poll_s: float = Field(default=5.0, ge=0)
    """How often a waiting fork looks at its uploads and its manifesting job."""
    stage_lease_s: int = Field(default=900, ge=1)
    """How long one delivery of a stage task holds the stage before another may take it
    (a worker that died mid-stage); Cloud Tasks' dispatch deadline is at most 30 minutes.
    A running stage whose lease ran out, or that has had no lease and no write for as long,
    is stuck: the sweeper queues it again, and resume may act on it."""
    max_requeues: int = Field(default=3, ge=0)
    """How often the sweeper queues a stuck stage or job again before it fails it, naming
    why. Deliveries that start and die are bounded too (a job's attempts)."""


class PipelineSettings(BaseModel):
    concurrency: int = Field(default=8, ge=1, le=64)
    """Model calls a project's stage makes at once (image calls, clip starts), shared out
    among the stage's chunks."""
    chunk_scenes: int = Field(default=10, ge=1, le=200)
    """Scenes per task of the keyframes and clips stages: Cloud Tasks spreads a long video's
    chunks over instances, and no task's work grows with the scene count."""


class IdentitySettings(BaseModel):
    """The identity check of keyframes: the faces the model service finds in each keyframe
    against the face embeddings of the characters the scene places."""

    model_service_url: str | None = None
    """The model service (its `faces` API). Unset: keyframes are not checked, and each scene
    says so."""
    id_token: bool = False
    """Call it with a Google ID token whose audience is its URL (Cloud Run service-to-service
    auth, as the runtime's own service account); off locally."""
    threshold: float = Field(default=0.36, ge=-1, le=1)
    """Cosine similarity below which a character is not taken to be in a keyframe. SFace's
    authors publish 0.363 for the same person in two photos; a keyframe composed from the
    character's crops scores 0.8 and more, someone else about 0.2."""
    rerolls: int = Field(default=1, ge=0, le=5)
    """Keyframes made again (new seeds) when one is below the threshold; the best is kept."""
    concurrency: int = Field(default=4, ge=1, le=64)
    """Checks a stage task has in flight at once."""
    timeout_s: float = Field(default=120, gt=0, le=900)
    """One call, a cold start of the model service included (Cloud Run holds the request
    while an instance starts and loads its models)."""
    attempts: int = Field(default=3, ge=1, le=10)
    """Tries of one call on a connection error, 429 or 5xx, with backoff, before the keyframe
    is recorded as unchecked and flagged."""
    cost_per_check_usd: float = Field(default=0.0, ge=0)
    """What one check is put on the ledger for (the model service's GPU time); nothing
    locally."""


class DependencySettings(BaseModel):
    """How long one call to Firestore, Cloud Storage or Cloud Tasks may take, retries
    included: past it the call fails, and the API answers 503 with Retry-After at once
    rather than hang while a service is down (the clients' own defaults retry for minutes)."""

    deadline_s: float = Field(default=5.0, gt=0, le=120)
    retry_after_s: int = Field(default=5, ge=1, le=3600)
    """What a 503 tells the client to wait before it tries again."""


class ModelSettings(BaseModel):
    """Which backends the model service runs, and where their files are."""

    detector: Literal["darknet-yolov3-tiny", "onnx-yolo"] = "darknet-yolov3-tiny"
    faces: Literal["yunet-sface", "insightface-buffalo-l"] = "yunet-sface"
    describer: Literal["local", "gemini"] = "local"
    offline_dir: str = ".models/offline"
    yolo_onnx_path: str = ".models/production/yolo11n.onnx"
    buffalo_dir: str = ".models/production/buffalo_l"
    gemini_api_key: SecretStr | None = None
    """Secret: no default. Required when describer is gemini."""
    vertex_project: str | None = None
    """Veo runs on Vertex AI (google-genai refuses it with a Gemini API key): with a project,
    the runtime's own credentials are used in vertex_location."""
    vertex_location: str = "us-central1"
    vertex_api_key: SecretStr | None = None
    """Secret: no default. A Vertex AI key (express mode), when there is no vertex_project."""
    gemini_model: str = "gemini-2.5-flash"
    gemini_base_url: str | None = None
    describe_concurrency: int = Field(default=4, ge=1, le=64)
    job_lease_s: int = Field(default=120, ge=1)
    """A job's worker renews this lease while it runs; a redelivered task waits it out."""
    min_free_fraction_for_environment: float = Field(default=0.6, ge=0, le=1)
    """A whole-scene ENVIRONMENT asset is made when detections leave this much free."""
    min_detection_confidence: float = Field(default=0.3, ge=0, le=1)
    """YOLOv3-tiny's scores run low (a clear bus scores about 0.33)."""
    min_crop_px: int = Field(default=32, ge=1)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FRAMEFORK_", env_nested_delimiter="__", extra="ignore"
    )

    project_id: str = Field(default="framefork-local", validation_alias="GOOGLE_CLOUD_PROJECT")
    environment: Literal["local", "test", "production"] = "local"
    storage: StorageSettings = Field(default_factory=StorageSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    tasks: TasksSettings = Field(default_factory=TasksSettings)
    models: ModelSettings = Field(default_factory=ModelSettings)
    dependencies: DependencySettings = Field(default_factory=DependencySettings)
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    identity: IdentitySettings = Field(default_factory=IdentitySettings)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
