"""Assets: one entry of a manifest (a character, object, place, style …) with its image."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field
from pydantic.json_schema import SkipJsonSchema

from shared.models.common import (
    Description,
    Document,
    Name,
    RequestBody,
    TagList,
    WholeNumber,
    utcnow,
)


class AssetType(StrEnum):
    CHARACTER = "CHARACTER"
    OBJECT = "OBJECT"
    ENVIRONMENT = "ENVIRONMENT"
    PROP = "PROP"
    STYLE = "STYLE"
    VEHICLE = "VEHICLE"
    OTHER = "OTHER"


TAG_PREFIXES: dict[AssetType, str] = {
    AssetType.CHARACTER: "CHAR",
    AssetType.OBJECT: "OBJ",
    AssetType.ENVIRONMENT: "ENV",
    AssetType.PROP: "PROP",
    AssetType.STYLE: "STYLE",
    AssetType.VEHICLE: "VEH",
    AssetType.OTHER: "OTHER",
}


def manifest_tag(asset_type: AssetType, number: int) -> str:
    """CHAR_01 … CHAR_99, then CHAR_100: two digits at least, never truncated."""
    return f"{TAG_PREFIXES[asset_type]}_{number:02d}"


class AssetSource(StrEnum):
    UPLOADED = "uploaded"
    EXTRACTED = "extracted"
    GENERATED = "generated"
    INHERITED = "inherited"


class UploadState(StrEnum):
    NONE = "none"
    """No image yet."""
    PENDING = "pending"
    """A signed URL was handed out; the bytes have not been validated yet."""
    READY = "ready"
    FAILED = "failed"


class ImageInfo(Document):
    """A validated image: where it lives and what it is."""

    object_name: str
    """Normalised image (orientation applied) in the media bucket."""
    thumbnail_object_name: str
    content_type: Literal["image/png", "image/jpeg", "image/webp"]
    width: int
    height: int
    size_bytes: int
    """Size of the bytes the client uploaded."""
    sha256: str
    """Hash of the bytes the client uploaded: the image's identity for provenance."""
    source_object: str
    source_generation: str
    """The upload (object name + generation) it was made from; a repeated event is a no-op."""


class UploadStatus(Document):
    state: UploadState = UploadState.NONE
    object_name: str | None = None
    """The object in the upload bucket that the pending upload must land on."""
    expected_content_type: str | None = None
    error: str | None = None
    updated_at: datetime | None = None


class BoundingBox(Document):
    """Pixel box in the source image: x, y of the top-left corner, width, height."""

    x: int = Field(ge=0)
    y: int = Field(ge=0)
    width: int = Field(gt=0)
    height: int = Field(gt=0)


UserText = Literal["reverse_prompt", "visual_description"]
"""The describer's text fields that a user may write instead (PATCH of an asset)."""
USER_TEXT_FIELDS: tuple[UserText, ...] = ("reverse_prompt", "visual_description")


class FaceEmbedding(Document):
    model: str
    """Embeddings from different models are not comparable: always say which made it."""
    vector: list[float]


class Asset(Document):
    """`manifests/{manifest_id}/assets/{id}`."""

    id: str
    manifest_id: str
    asset_type: AssetType
    manifest_tag: str
    name: str
    user_tags: list[str] = Field(default_factory=list)
    description: str = ""
    source: AssetSource = AssetSource.UPLOADED
    source_asset_id: str | None = None
    """For crops: the uploaded asset they were extracted from (deleting it deletes them)."""
    crop_bbox: BoundingBox | None = None
    sort_order: int = 0
    image: ImageInfo | None = None
    upload: UploadStatus = Field(default_factory=UploadStatus)
    reverse_prompt: str | None = None
    visual_description: str | None = None
    user_edited: list[str] = Field(default_factory=list)
    """Which of `reverse_prompt` and `visual_description` the user wrote (PATCH). Manifesting
    keeps these as they are and only writes the describer's other results (quality score,
    suggested name), unless the run asks to overwrite edited text, which also clears this."""
    quality_score: float | None = Field(default=None, ge=0, le=10)
    suggested_name: str | None = None
    detection_class: str | None = None
    detection_confidence: float | None = None
    is_face_crop: bool = False
    face_bbox: BoundingBox | None = None
    """The best face found in the image, if any (pixels of this asset's image)."""
    face_confidence: float | None = None
    face_embedding: FaceEmbedding | None = None
    face_group_id: str | None = None
    """Same value on every asset showing the same person (transitive grouping, E4)."""
    is_face_group_primary: bool = False
    detected_by: str | None = None
    faces_by: str | None = None
    described_by: str | None = None
    """Which model did each manifesting step; unset means the step is still to do (E7)."""
    processing_error: str | None = None
    """Why the last manifesting run could not process this asset (a corrupt image, say)."""
    is_inherited: bool = False
    inherited_from_asset: str | None = None
    inherited_from_project: str | None = None
    modified_fields: list[str] = Field(default_factory=list)
    """In a fork's manifest: what the fork changed of the asset it inherited (then no longer
    inherited)."""
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


SortOrderValue = Annotated[WholeNumber, Field(ge=0, le=1_000_000)]


class AssetCreate(RequestBody):
    asset_type: AssetType
    name: Name
    user_tags: TagList = Field(default_factory=list)
    description: Description = ""
    sort_order: SortOrderValue | None = None
    """Defaults to after the last asset."""


class AssetUpdate(RequestBody):
    asset_type: AssetType | SkipJsonSchema[None] = None
    """Changing the type issues a new tag of the new type; the old tag is not reused."""
    name: Name | SkipJsonSchema[None] = None
    user_tags: TagList | SkipJsonSchema[None] = None
    description: Description | SkipJsonSchema[None] = None
    sort_order: SortOrderValue | SkipJsonSchema[None] = None
    reverse_prompt: Description | SkipJsonSchema[None] = None
    """Text the user writes instead of the describer's: marked in `user_edited`, and kept by
    later processing runs unless they ask to overwrite it."""
    visual_description: Description | SkipJsonSchema[None] = None
    """As `reverse_prompt`."""


AcceptedContentType = Literal["image/png", "image/jpeg", "image/webp"]


class UploadUrlRequest(RequestBody):
    content_type: AcceptedContentType
    size_bytes: WholeNumber = Field(gt=0)
    """Announced size; the signed URL only accepts a body up to this size."""
