"""Checkpoints (C1–C4): after each stage, the whole state of a project's scenes, immutable.

A checkpoint holds every scene as it stood (prompts, placed tags, keyframe and clip object
names, all content-addressed and so never overwritten): going back to one, or branching from
it, needs nothing else. Edits never change a checkpoint: they go to a draft on it
(`projects/{id}/drafts/{checkpoint_id}`), each edited artifact as a new version document, and
continuing from an edited checkpoint starts a new branch.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool, StringConstraints
from pydantic.json_schema import SkipJsonSchema

from shared.models.common import Document, RequestBody, utcnow
from shared.models.projects import Scene, Stage
from shared.pipeline.ports import ShotType


class Checkpoint(Document):
    id: str
    stage: Stage
    branch: str
    parent_id: str | None = None
    stages_done: list[Stage]
    scenes: list[Scene]
    final_video_object: str | None = None
    final_video_basis: str | None = None
    identity_review: list[int] = Field(default_factory=list)
    """Scenes whose keyframes failed their identity check or could not be checked."""
    created_at: datetime = Field(default_factory=utcnow)

    def artifacts(self) -> dict[str, Any]:
        """What this checkpoint's own stage made."""
        if self.stage is Stage.STORYBOARD:
            return {"storyboard": [s.index for s in self.scenes]}
        if self.stage is Stage.KEYFRAMES:
            return {
                "keyframes": {
                    s.index: [s.start_frame_object, s.end_frame_object] for s in self.scenes
                }
            }
        if self.stage is Stage.CLIPS:
            return {"clips": {s.index: s.clip_object for s in self.scenes}}
        return {"final_video": self.final_video_object}


class ArtifactKind(StrEnum):
    SCENE = "scene"
    KEYFRAME = "keyframe"
    CLIP = "clip"


class ArtifactVersion(Document):
    """`projects/{id}/artifacts/{id}`: one version of one scene's artifact. Immutable."""

    id: str
    checkpoint_id: str
    scene: int
    kind: ArtifactKind
    version: int
    made_by: Literal["made", "edited", "uploaded", "regenerated"]
    """made: version 1, what the stage made (listed, never stored)."""
    fields: dict[str, Any] = Field(default_factory=dict)
    """The scene fields (storyboard edits) or object names (keyframes, clips) of the version."""
    created_at: datetime = Field(default_factory=utcnow)


class PendingKeyframe(Document):
    """A keyframe regeneration queued as a task and not made yet."""

    scene: int
    frame: Literal["start", "end"]
    version: int
    prompt: str | None = None
    requested_at: datetime = Field(default_factory=utcnow)


class Draft(Document):
    """Edits waiting on a checkpoint until the user continues from it."""

    checkpoint_id: str
    pending: list[PendingKeyframe] = Field(default_factory=list)
    """Keyframe regenerations still being made: a continue waits for them."""
    failed: list[str] = Field(default_factory=list)
    """Regenerations that failed, with the model's reason; the draft keeps what it had."""
    scenes: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Scene index → the fields that replace the checkpoint's."""
    redo_clips: list[int] = Field(default_factory=list)
    """Scenes whose clip is to be made again when the project continues."""
    artifact_ids: list[str] = Field(default_factory=list)
    continued_as: str | None = None
    """The branch that consumed the draft; a consumed draft is kept, not edited again."""

    @property
    def edited(self) -> bool:
        return bool(self.scenes or self.redo_clips)


def scenes_with_draft(checkpoint: Checkpoint, draft: Draft) -> list[Scene]:
    scenes = []
    for scene in checkpoint.scenes:
        changes = draft.scenes.get(str(scene.index), {})
        # Validated, not copied over: edits arrive as JSON values (enums as strings).
        scenes.append(Scene.model_validate({**scene.model_dump(), **changes}) if changes else scene)
    return scenes


Prompt = Annotated[str, StringConstraints(min_length=1, max_length=4000)]
Title = Annotated[str, StringConstraints(min_length=1, max_length=120)]
Text = Annotated[str, StringConstraints(max_length=4000)]
Tags = Annotated[list[str], Field(max_length=10)]


class SceneEdit(RequestBody):
    """Storyboard fields of one scene, at the storyboard checkpoint (C2). Constraints sit on
    the types, not on the optional fields: pydantic would apply them to None as well."""

    title: Title | SkipJsonSchema[None] = None
    description: Text | SkipJsonSchema[None] = None
    shot_type: ShotType | SkipJsonSchema[None] = None
    keyframe_prompt: Prompt | SkipJsonSchema[None] = None
    end_keyframe_prompt: Prompt | SkipJsonSchema[None] = None
    motion_prompt: Prompt | SkipJsonSchema[None] = None
    asset_tags: Tags | SkipJsonSchema[None] = None


class KeyframeRegenerate(RequestBody):
    """Regenerate a keyframe at the keyframes checkpoint, optionally with a new prompt."""

    frame: Literal["start", "end"] = "start"
    prompt: Prompt | None = None


class ClipRegenerate(RequestBody):
    """Make a scene's clip again at the clips checkpoint, optionally with a new motion prompt."""

    motion_prompt: Prompt | None = None


class ContinueRequest(RequestBody):
    auto_continue: StrictBool = False
    """Run to the end without pausing; otherwise pause after each stage for review."""
    new_branch: StrictBool = False
    """Continue an unedited checkpoint that was continued before on a branch of its own."""
