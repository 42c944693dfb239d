"""What the API answers with: the stored documents minus what only the backend needs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from shared.models.assets import Asset, AssetSource, AssetType, BoundingBox, UploadState
from shared.models.face_links import FaceLinkKind
from shared.models.jobs import Job
from shared.models.manifests import Manifest, ManifestCategory, ManifestStatus


class ErrorDetail(BaseModel):
    code: str = Field(examples=["not_found"])
    message: str
    status: int
    details: list[dict[str, Any]] = Field(default_factory=list)


class ErrorBody(BaseModel):
    """Every error answer of the API has this shape."""

    error: ErrorDetail


class ManifestView(BaseModel):
    id: str
    name: str
    description: str
    category: ManifestCategory
    tags: list[str]
    status: ManifestStatus
    status_reason: str | None
    version: int
    asset_count: int
    asset_type_counts: dict[AssetType, int]
    tag_counters: dict[AssetType, int]
    contact_sheet_object: str | None
    times_used: int
    last_used_at: datetime | None
    parent_manifest_id: str | None
    processing_cost_usd: float
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, manifest: Manifest) -> ManifestView:
        return cls.model_validate(manifest.model_dump())


class ImageView(BaseModel):
    content_type: str
    width: int
    height: int
    size_bytes: int
    sha256: str
    url: str
    """API path that redirects to a short-lived signed URL of the image."""
    thumbnail_url: str


class UploadView(BaseModel):
    state: UploadState
    error: str | None
    updated_at: datetime | None


class AssetView(BaseModel):
    id: str
    manifest_id: str
    asset_type: AssetType
    manifest_tag: str
    name: str
    user_tags: list[str]
    description: str
    source: AssetSource
    source_asset_id: str | None
    crop_bbox: BoundingBox | None
    sort_order: int
    image: ImageView | None
    upload: UploadView
    reverse_prompt: str | None
    visual_description: str | None
    user_edited: list[str]
    """Which of `reverse_prompt` and `visual_description` the user wrote: processing keeps
    them unless asked to overwrite."""
    quality_score: float | None
    suggested_name: str | None
    detection_class: str | None
    detection_confidence: float | None
    is_face_crop: bool
    face_bbox: BoundingBox | None
    face_confidence: float | None
    face_embedding_model: str | None
    """The vector itself stays in the backend; which model made it is what clients need."""
    face_group_id: str | None
    is_face_group_primary: bool
    detected_by: str | None
    faces_by: str | None
    described_by: str | None
    processing_error: str | None
    is_inherited: bool
    inherited_from_asset: str | None
    inherited_from_project: str | None
    modified_fields: list[str]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, asset: Asset) -> AssetView:
        data = asset.model_dump(exclude={"image", "upload", "face_embedding"})
        base = f"/manifests/{asset.manifest_id}/assets/{asset.id}"
        image = None
        if asset.image is not None:
            image = ImageView(
                content_type=asset.image.content_type,
                width=asset.image.width,
                height=asset.image.height,
                size_bytes=asset.image.size_bytes,
                sha256=asset.image.sha256,
                url=f"{base}/image",
                thumbnail_url=f"{base}/thumbnail",
            )
        return cls(
            **data,
            image=image,
            upload=UploadView.model_validate(asset.upload.model_dump()),
            face_embedding_model=asset.face_embedding.model if asset.face_embedding else None,
        )


class ManifestDetail(BaseModel):
    manifest: ManifestView
    assets: list[AssetView]


class ManifestPage(BaseModel):
    items: list[ManifestView]
    next_cursor: str | None = Field(
        description="Pass as `cursor` with the same filters and sort for the next page; "
        "null on the last page."
    )


class AssetList(BaseModel):
    items: list[AssetView]


class UploadTicketView(BaseModel):
    """Send the image with `method` to `url`, with exactly these `headers`."""

    url: str
    method: str
    headers: dict[str, str]
    object_name: str
    expires_at: datetime


class UploadResult(BaseModel):
    outcome: str
    detail: str
    asset: AssetView | None


class Health(BaseModel):
    status: str


class JobView(BaseModel):
    """A manifesting job as clients watch it (they may also listen to `jobs/{id}`)."""

    id: str
    kind: str
    manifest_id: str
    asset_ids: list[str] | None
    overwrite_edited_text: bool
    status: str
    step: str
    steps_done: list[str]
    counters: dict[str, int]
    failures: list[dict[str, str]]
    ambiguous_faces: list[dict[str, str | float]]
    face_grouping_mode: str | None
    error: str | None
    attempts: int
    requeues: int
    cost_usd: float
    models: dict[str, str]
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, job: Job) -> JobView:
        return cls.model_validate(
            job.model_dump(mode="json", exclude={"owner_id", "lease_until", "face_grouping"})
        )


class FaceLinkView(BaseModel):
    id: str
    asset_a: str
    asset_b: str
    kind: FaceLinkKind
    created_at: datetime


class FaceLinkList(BaseModel):
    items: list[FaceLinkView]


class FaceLinkResult(BaseModel):
    link: FaceLinkView
    face_groups: dict[str, str | None]
    """The face group of each of the two assets once regrouped (unchanged before the
    manifest's first processing run, which then honours the link)."""


class FaceReviewPair(BaseModel):
    """Two faces a run found nearly alike and kept apart: post a link to resolve it."""

    asset_a: AssetView
    asset_b: AssetView
    similarity: float
    job_id: str
    found_at: datetime


class FaceReview(BaseModel):
    items: list[FaceReviewPair]
    """Newest run first, most alike first within a run."""
