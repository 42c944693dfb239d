"""Jobs: one manifesting (or, later, pipeline) run that clients watch step by step."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field, StrictBool

from shared.models.common import Document, RequestBody, utcnow
from shared.models.face_links import FaceGroupingState


class JobKind(StrEnum):
    MANIFESTING = "manifesting"


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED)


class JobStep(StrEnum):
    """The manifesting steps, in order. A resumed job skips the steps it finished."""

    QUEUED = "queued"
    CONTACT_SHEET = "contact_sheet"
    DETECTION = "detection"
    FACES = "faces"
    GROUPING = "grouping"
    DESCRIBE = "describe"
    FINALIZE = "finalize"
    DONE = "done"


class JobCounters(Document):
    images_total: int = 0
    images_detected: int = 0
    crops_created: int = 0
    environments_created: int = 0
    faces_found: int = 0
    face_groups: int = 0
    faces_regrouped: int = 0
    """Faces whose group was worked out: all of them in a full regroup, the new ones and the
    groups they touched in an incremental one."""
    ambiguous_face_pairs: int = 0
    described: int = 0
    failed_assets: int = 0


class AssetFailure(Document):
    asset_id: str
    step: JobStep
    reason: str


class AmbiguousFaces(Document):
    """Two faces in different groups that are nearly alike: not merged, flagged for review."""

    first_asset_id: str
    second_asset_id: str
    similarity: float


class Job(Document):
    """`jobs/{id}`. Progress lives here (never in process memory): clients listen to it."""

    id: str
    kind: JobKind = JobKind.MANIFESTING
    owner_id: str
    manifest_id: str
    asset_ids: list[str] | None = None
    """Reprocess only these assets; None processes everything not yet processed (E7)."""
    overwrite_edited_text: bool = False
    """Whether the describer's text replaces what the user wrote (an asset's `user_edited`
    fields, then unmarked) on the assets this job describes; otherwise the user's is kept."""
    status: JobStatus = JobStatus.QUEUED
    step: JobStep = JobStep.QUEUED
    steps_done: list[JobStep] = Field(default_factory=list)
    counters: JobCounters = Field(default_factory=JobCounters)
    failures: list[AssetFailure] = Field(default_factory=list)
    """Assets that failed (a corrupt image, say): the rest of the manifest went on."""
    error: str | None = None
    """Why the whole job failed, naming the step."""
    ambiguous_faces: list[AmbiguousFaces] = Field(default_factory=list)
    face_grouping_mode: str | None = None
    """"incremental" (only the new faces matched) or "full" (every face regrouped)."""
    face_grouping: FaceGroupingState | None = None
    """The grouping's state, written on the manifest with the job's end."""
    attempts: int = 0
    """Deliveries that started work (Cloud Tasks delivers at least once)."""
    lease_until: datetime | None = None
    requeues: int = 0
    """Times the sweeper queued the job again after its task was lost or its worker died."""
    cost_usd: float = 0.0
    models: dict[str, str] = Field(default_factory=dict)
    """Which detector, face model and describer made the results."""
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None


class ProcessRequest(RequestBody):
    """Body of POST /manifests/{id}/process (optional)."""

    full: StrictBool = False
    """Reprocess every asset, not only those not processed yet."""
    overwrite_edited_text: StrictBool = False
    """Replace the text the user wrote (an asset's `user_edited` fields) with the describer's
    on the assets this run describes, and clear the marks; by default the user's is kept."""


class ReprocessRequest(RequestBody):
    """Body of POST /manifests/{id}/assets/{asset_id}/reprocess (optional)."""

    overwrite_edited_text: StrictBool = False
    """Replace the text the user wrote (`user_edited`) with the describer's, and clear the
    marks; by default the user's is kept."""


class JobTask(RequestBody):
    """Payload of the Cloud Task that runs a manifesting job."""

    job_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
