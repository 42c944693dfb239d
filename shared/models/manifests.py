"""Manifests: reusable registries of the characters, objects, places and styles of a production."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field
from pydantic.json_schema import SkipJsonSchema

from shared.models.assets import AssetType
from shared.models.common import (
    Description,
    Document,
    Name,
    QueryParams,
    RequestBody,
    TagList,
    utcnow,
)
from shared.models.face_links import FaceGroupingState, FaceLink


class ManifestCategory(StrEnum):
    CHARACTERS = "CHARACTERS"
    ENVIRONMENT = "ENVIRONMENT"
    FULL_PRODUCTION = "FULL_PRODUCTION"
    STYLE_KIT = "STYLE_KIT"
    BRAND_KIT = "BRAND_KIT"
    CUSTOM = "CUSTOM"


class ManifestStatus(StrEnum):
    DRAFT = "DRAFT"
    PROCESSING = "PROCESSING"
    READY = "READY"
    ERROR = "ERROR"


class Manifest(Document):
    """`manifests/{id}`. Counters here are written only inside version-guarded writes."""

    id: str
    owner_id: str
    name: str
    description: str = ""
    category: ManifestCategory = ManifestCategory.CUSTOM
    tags: list[str] = Field(default_factory=list)
    status: ManifestStatus = ManifestStatus.DRAFT
    status_reason: str | None = None
    version: int = 1
    """Bumped by every content change (manifest fields, assets, images)."""
    asset_count: int = 0
    asset_type_counts: dict[AssetType, int] = Field(default_factory=dict)
    """Live assets per type."""
    tag_counters: dict[AssetType, int] = Field(default_factory=dict)
    """Highest tag number ever issued per type; never decreases, so tags are never reused."""
    contact_sheet_object: str | None = None
    times_used: int = 0
    last_used_at: datetime | None = None
    parent_manifest_id: str | None = None
    processing_cost_usd: float = 0.0
    face_links: list[FaceLink] = Field(default_factory=list)
    """A person's corrections of the face groups (shared/face_links.py)."""
    face_grouping: FaceGroupingState | None = None
    is_deleted: bool = False
    deleted_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class ManifestCreate(RequestBody):
    name: Name
    description: Description = ""
    category: ManifestCategory = ManifestCategory.CUSTOM
    tags: TagList = Field(default_factory=list)


class ManifestUpdate(RequestBody):
    """Partial update: only the fields sent change. `null` is refused for required fields."""

    name: Name | SkipJsonSchema[None] = None
    description: Description | SkipJsonSchema[None] = None
    category: ManifestCategory | SkipJsonSchema[None] = None
    tags: TagList | SkipJsonSchema[None] = None


class ManifestDuplicate(RequestBody):
    name: Name | None = None
    """Name of the copy; defaults to "<original> (copy)"."""


class ManifestSort(StrEnum):
    updated_at = "updated_at"
    created_at = "created_at"
    name = "name"
    times_used = "times_used"
    asset_count = "asset_count"


class SortOrder(StrEnum):
    asc = "asc"
    desc = "desc"


DEFAULT_SORT_ORDER: dict[ManifestSort, SortOrder] = {
    ManifestSort.updated_at: SortOrder.desc,
    ManifestSort.created_at: SortOrder.desc,
    ManifestSort.name: SortOrder.asc,
    ManifestSort.times_used: SortOrder.desc,
    ManifestSort.asset_count: SortOrder.desc,
}


class ManifestListQuery(QueryParams):
    category: ManifestCategory | None = None
    status: ManifestStatus | None = None
    sort: ManifestSort = ManifestSort.updated_at
    order: SortOrder | None = None
    limit: int | None = Field(default=None, ge=1, le=100)
    cursor: str | None = Field(default=None, max_length=2000)

    @property
    def effective_order(self) -> SortOrder:
        return self.order or DEFAULT_SORT_ORDER[self.sort]
