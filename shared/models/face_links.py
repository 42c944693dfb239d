"""A person's corrections of the face groups (links) and the state of the last grouping."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from shared.models.common import Document, DocumentId, RequestBody, utcnow

MAX_FACE_LINKS = 1000
"""Links kept on one manifest document (about 150 bytes each, far below Firestore's 1 MiB)."""


class FaceLinkKind(StrEnum):
    SAME = "same"
    """The two assets show one person: their groups are merged."""
    DIFFERENT = "different"
    """They show two people: never in one group, however alike they look."""


class FaceLink(Document):
    """Stored on the manifest (`face_links`): every grouping honours it, full or incremental."""

    id: str
    asset_a: str
    asset_b: str
    kind: FaceLinkKind
    created_at: datetime = Field(default_factory=utcnow)


class FaceLinkCreate(RequestBody):
    asset_a: DocumentId
    asset_b: DocumentId
    kind: FaceLinkKind


class FaceGroupingState(Document):
    """What the manifest's face groups were last worked out from. A processing run whose
    grouped faces, settings and links still give this digest matches only its new faces;
    anything else (a face removed or embedded again, a link changed) regroups them all."""

    model: str
    threshold: float
    ambiguous_margin: float
    digest: str
