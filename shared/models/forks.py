"""Forks (F1–F3): a new project made from a finished one's checkpoint, with changes."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StrictBool, StrictInt

from shared.models.assets import AcceptedContentType, AssetType
from shared.models.checkpoints import Prompt, SceneEdit, Text
from shared.models.common import (
    Description,
    DocumentId,
    Name,
    RequestBody,
    TagList,
    WholeNumber,
)
from shared.models.projects import RunThrough
from shared.pipeline.catalog import ImageModelName, TextModelName, VideoModelName

SceneIndex = Annotated[WholeNumber, Field(ge=0, le=999)]
"""true is no scene."""
SceneKey = Annotated[StrictInt, Field(ge=0, le=999)]
"""A scene index as an object key: JSON keys are strings, and StrictInt parses them from digits
(a validator before it would not)."""


class ForkOverrides(RequestBody):
    """Project settings that differ in the fork; checked like /generate's."""

    prompt: Prompt | None = None
    style: Text | None = None
    text_model: TextModelName | None = None
    image_model: ImageModelName | None = None
    video_model: VideoModelName | None = None
    audio: StrictBool | None = None


class UploadAnnouncement(RequestBody):
    """The image a fork waits for: with its type and size, the fork answers a signed URL."""

    content_type: AcceptedContentType | None = None
    size_bytes: WholeNumber | None = Field(default=None, gt=0)


class AssetModification(UploadAnnouncement):
    name: Name | None = None
    reverse_prompt: Text | None = None
    visual_description: Text | None = None
    replace_image: StrictBool = False
    """A new image is uploaded for the asset (the fork waits for it)."""


class NewUpload(UploadAnnouncement):
    asset_type: AssetType
    name: Name
    description: Description = ""
    user_tags: TagList = Field(default_factory=list)


class AssetChanges(RequestBody):
    modified_assets: dict[DocumentId, AssetModification] = Field(default_factory=dict)
    removed_asset_ids: list[DocumentId] = Field(default_factory=list, max_length=500)
    new_uploads: list[NewUpload] = Field(default_factory=list, max_length=50)


class ForkRequest(RequestBody):
    """POST /projects/{id}/forks and …/forks/preview."""

    name: Name | None = None
    from_checkpoint: DocumentId | None = None
    """Default: the source's current checkpoint."""
    overrides: ForkOverrides = Field(default_factory=ForkOverrides)
    scene_edits: dict[SceneKey, SceneEdit] = Field(
        default_factory=dict, max_length=1000,
        json_schema_extra={"propertyNames": {"pattern": "^[0-9]{1,3}$"}},
    )  # fmt: skip
    """Scene index (of the source checkpoint) → storyboard fields, as the storyboard edit takes."""
    deleted_scenes: list[SceneIndex] = Field(default_factory=list)
    clear_keyframes: list[SceneIndex] = Field(default_factory=list)
    """Scenes whose keyframes (and so clips) are made anew."""
    asset_changes: AssetChanges | None = None
    """Only for a project made with a manifest."""
    run_through: RunThrough = "video"
    auto_continue: StrictBool = False
