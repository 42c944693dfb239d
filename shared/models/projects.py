"""Projects (G1–G2): one video from a prompt and an optional manifest, made stage by stage."""

from __future__ import annotations

import math
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import Field, StrictBool, model_validator
from pydantic.json_schema import SkipJsonSchema

from shared.models.common import Document, Name, RequestBody, WholeNumber, utcnow
from shared.pipeline.catalog import (
    MAX_SCENES,
    VIDEO_MODELS,
    ImageModelName,
    TextModelName,
    VideoModelName,
)
from shared.pipeline.ports import ShotType


class ProjectStatus(StrEnum):
    PENDING = "pending"
    STORYBOARDING = "storyboarding"
    KEYFRAMING = "keyframing"
    VIDEO_GEN = "video_gen"
    STITCHING = "stitching"
    COMPLETE = "complete"
    FAILED = "failed"
    STOPPED = "stopped"
    STAGED = "staged"
    """Paused after the stage named by run_through, waiting for the user to continue."""
    AWAITING_UPLOADS = "awaiting_uploads"
    """A fork waiting for its new images, then for their manifesting job."""

    @property
    def is_terminal(self) -> bool:
        return self in (ProjectStatus.COMPLETE, ProjectStatus.FAILED, ProjectStatus.STOPPED)


class Stage(StrEnum):
    STORYBOARD = "storyboard"
    KEYFRAMES = "keyframes"
    CLIPS = "clips"
    STITCH = "stitch"

    @property
    def status(self) -> ProjectStatus:
        return {
            Stage.STORYBOARD: ProjectStatus.STORYBOARDING,
            Stage.KEYFRAMES: ProjectStatus.KEYFRAMING,
            Stage.CLIPS: ProjectStatus.VIDEO_GEN,
            Stage.STITCH: ProjectStatus.STITCHING,
        }[self]

    @property
    def next(self) -> Stage | None:
        order = list(Stage)
        index = order.index(self)
        return order[index + 1] if index + 1 < len(order) else None


RunThrough = Literal["storyboard", "keyframes", "video"]
RUN_THROUGH_STAGE: dict[str, Stage] = {
    "storyboard": Stage.STORYBOARD,
    "keyframes": Stage.KEYFRAMES,
    "video": Stage.STITCH,
}


TakeSeed = Annotated[WholeNumber, Field(ge=0, le=2**31 - 1)]


class GenerateRequest(RequestBody):
    """POST /generate. Checked against the model catalog: durations and audio per model."""

    prompt: str = Field(min_length=3, max_length=4000)
    name: Name | None = None
    style: str | None = Field(default=None, max_length=500)
    aspect_ratio: Literal["16:9", "9:16"] = "16:9"
    clip_seconds: WholeNumber = Field(default=4, ge=1, le=60)
    total_seconds: WholeNumber = Field(default=16, ge=1, le=600)
    audio: StrictBool = False
    text_model: TextModelName = "local-storyboard-1"
    image_model: ImageModelName = "local-keyframe-1"
    video_model: VideoModelName = "local-clip-1"
    run_through: RunThrough = "video"
    auto_continue: StrictBool = False
    """Run through without pausing at run_through."""
    manifest_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    take_seed: TakeSeed | None = None
    """Reproduce an earlier take: its seed makes the same inputs, so what exists is reused.
    Drawn at random when left out: two projects with one prompt are two takes."""

    @model_validator(mode="after")
    def _fits_the_models(self) -> Self:
        spec = VIDEO_MODELS[self.video_model]
        if self.clip_seconds not in spec.clip_seconds:
            allowed = ", ".join(str(s) for s in spec.clip_seconds)
            raise ValueError(
                f"{spec.name} makes clips of {allowed} seconds, not {self.clip_seconds}"
            )
        if self.total_seconds > spec.max_total_seconds:
            raise ValueError(f"{spec.name} allows at most {spec.max_total_seconds} seconds in all")
        if self.audio and not spec.audio:
            raise ValueError(
                f"{spec.name} makes no audio; set audio to false or pick another model"
            )
        if self.total_seconds < self.clip_seconds:
            raise ValueError("total_seconds must be at least one clip long")
        if self.scene_count > MAX_SCENES:
            raise ValueError(f"that is {self.scene_count} scenes; at most {MAX_SCENES} are allowed")
        return self

    @property
    def scene_count(self) -> int:
        return math.ceil(self.total_seconds / self.clip_seconds)


class ResumeRequest(RequestBody):
    """POST /projects/{id}/resume: optionally with other models for what is left to make."""

    text_model: TextModelName | SkipJsonSchema[None] = None
    image_model: ImageModelName | SkipJsonSchema[None] = None
    video_model: VideoModelName | SkipJsonSchema[None] = None


class StageError(Document):
    """Why a project failed: the stage, the scene (if one), the cause."""

    stage: Stage
    scene: int | None = None
    cause: str


class CostLedger(Document):
    estimate_usd: float = 0.0
    spent_usd: float = 0.0
    by_stage: dict[Stage, float] = Field(default_factory=dict)
    """Identity checks are keyframes spend (their spend lines are in that stage's sum)."""
    identity_checks: int = 0
    """The identity checks behind the keyframes of the scenes as they stand (made, not reused
    from the index), and the time they took."""
    identity_check_s: float = 0.0


class Branch(Document):
    parent: str | None = None
    from_checkpoint: str | None = None
    created_at: datetime = Field(default_factory=utcnow)


class ReuseSource(Document):
    """Where a reused artifact was first made (P1)."""

    project_id: str
    checkpoint_id: str


class StageLease(Document):
    """The delivery of a stage task that is running it; others wait until it ends or expires."""

    token: str
    stage: Stage
    until: datetime


class StageChunks(Document):
    """The chunks of one stage of one run that have ended: the stage ends with the last."""

    run: int
    stage: Stage
    done: list[int] = Field(default_factory=list)


class Project(Document):
    """`projects/{id}`; scenes in `projects/{id}/scenes/{index:03d}`."""

    id: str
    owner_id: str
    name: str
    prompt: str
    style: str | None = None
    aspect_ratio: Literal["16:9", "9:16"] = "16:9"
    clip_seconds: int
    total_seconds: int
    scene_count: int
    audio: StrictBool = False
    text_model: str
    image_model: str
    video_model: str
    run_through: RunThrough = "video"
    auto_continue: StrictBool = False
    pause_each_stage: bool = False
    """Set by a continue without auto_continue: the user reviews each stage in turn."""
    take_seed: int = 0
    """Enters every basis: branches, resumes and forks keep it; a new generate draws one."""
    status: ProjectStatus = ProjectStatus.PENDING
    stage: Stage | None = None
    """The stage running, staged after, or failed in."""
    stages_done: list[Stage] = Field(default_factory=list)
    error: StageError | None = None
    manifest_id: str | None = None
    snapshot_id: str | None = None
    manifest_version: int | None = None
    forked_from: str | None = None
    """The project this one was forked from (F1), and its checkpoint."""
    forked_from_checkpoint: str | None = None
    awaiting: list[str] = Field(default_factory=list)
    """A fork's assets whose images it waits for, until awaiting_until."""
    awaiting_until: datetime | None = None
    fork_job_id: str | None = None
    """The manifesting job that processes a fork's new images."""
    branch: str = "main"
    branches: dict[str, Branch] = Field(default_factory=lambda: {"main": Branch()})
    """Every branch of the project: an edited checkpoint continues on a new one (C3)."""
    current_checkpoint_id: str | None = None
    final_video_object: str | None = None
    final_video_basis: str | None = None
    final_video_reused_from: ReuseSource | None = None
    versions: dict[str, int] = Field(default_factory=dict)
    """`kind:scene` → the last version number issued for that artifact (1: what the stage
    made), so concurrent edits never repeat one."""
    chunk_scenes: int = Field(default=10, ge=1)
    """Scenes per keyframes or clips task, fixed when the project is made, so every delivery
    and every sweep partitions the scenes alike."""
    leases: dict[str, StageLease] = Field(default_factory=dict)
    """The delivery running each chunk of the current stage, by chunk number."""
    chunks: StageChunks | None = None
    requeues: int = 0
    """Times the sweeper queued the current stage again (its task lost, its worker dead);
    back to 0 when a stage ends or the project resumes."""
    cost: CostLedger = Field(default_factory=CostLedger)
    identity_review: list[int] = Field(default_factory=list)
    """Scenes whose keyframes failed their identity check, or could not be checked: someone
    should look at them before the clips are made."""
    run: int = 1
    """Bumped by stop and resume: tasks of an older run find a different number and quit."""
    is_deleted: bool = False
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    def chunk_count(self, stage: Stage) -> int:
        """Tasks the stage runs in: the scene stages in chunks, the others whole."""
        if stage in (Stage.KEYFRAMES, Stage.CLIPS):
            return max(1, math.ceil(self.scene_count / self.chunk_scenes))
        return 1

    def chunks_done(self, stage: Stage) -> list[int]:
        """The chunks of `stage` that ended in this run."""
        record = self.chunks
        return record.done if record and (record.run, record.stage) == (self.run, stage) else []


class MediaState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class IdentityVerdict(StrEnum):
    PASS = "pass"
    BELOW_THRESHOLD = "below_threshold"
    SKIPPED = "skipped"
    """Nothing to compare (no manifest, no character with a face, another embedding model)."""
    UNCHECKED = "unchecked"
    """The model service could not be asked: never taken for a pass."""

    @property
    def needs_review(self) -> bool:
        return self in (IdentityVerdict.BELOW_THRESHOLD, IdentityVerdict.UNCHECKED)


VERDICT_SEVERITY = [
    IdentityVerdict.SKIPPED,
    IdentityVerdict.PASS,
    IdentityVerdict.BELOW_THRESHOLD,
    IdentityVerdict.UNCHECKED,
]
"""A scene's verdict is the most severe of its keyframes', a keyframe's of its characters'."""


def worst(verdicts: list[IdentityVerdict]) -> IdentityVerdict:
    return max(verdicts, key=VERDICT_SEVERITY.index, default=IdentityVerdict.SKIPPED)


class CharacterScore(Document):
    """How alike one character placed in the scene and the faces in a keyframe are."""

    tag: str
    name: str
    face_group_id: str | None = None
    similarity: float | None = None
    """The best cosine similarity between a face in the keyframe and the face embeddings of
    the character's face group (same embedding model only)."""
    verdict: IdentityVerdict
    reason: str | None = None


class FrameIdentity(Document):
    """The identity check of one keyframe (start_frame or end_frame)."""

    verdict: IdentityVerdict
    characters: list[CharacterScore] = Field(default_factory=list)
    faces: int = 0
    """Faces the model service found in the keyframe."""
    model: str | None = None
    """The embedding model of those faces."""
    basis: str | None = None
    """The check's digest (the keyframe's content, the characters' embeddings): a check whose
    inputs recur is taken from the artifact index."""
    reused: bool = False
    checks: int = 0
    """Calls to the model service behind this result (its re-rolls' included; none when
    taken from the index), and the time they took."""
    seconds: float = 0.0
    rerolls: int = 0
    """Keyframes made again because this one's similarity was below the threshold; the best
    of all was kept."""
    uploaded: bool = False
    """The user's own keyframe: checked, never re-rolled."""
    reason: str | None = None


class SceneIdentity(Document):
    """The identity check of a scene's keyframes: per character, the lowest of its keyframes'
    best similarities; the verdict is the most severe of its keyframes'."""

    verdict: IdentityVerdict
    score: float | None = None
    """The lowest character similarity of the scene: the figure to compare scenes by."""
    review: bool = False
    """Below the threshold after the re-rolls, or unchecked: flagged, never passed."""
    reason: str | None = None
    characters: list[CharacterScore] = Field(default_factory=list)
    frames: dict[str, FrameIdentity] = Field(default_factory=dict)

    @classmethod
    def skipped(cls, reason: str) -> SceneIdentity:
        return cls(verdict=IdentityVerdict.SKIPPED, reason=reason)

    @classmethod
    def of_frames(cls, frames: dict[str, FrameIdentity]) -> SceneIdentity:
        by_tag: dict[str, list[CharacterScore]] = {}
        for frame in frames.values():
            for character in frame.characters:
                by_tag.setdefault(character.tag, []).append(character)
        characters = [
            min(scores, key=lambda c: (VERDICT_SEVERITY.index(c.verdict) * -1,
                                       c.similarity if c.similarity is not None else 2.0))
            for scores in by_tag.values()
        ]  # fmt: skip
        verdict = worst([f.verdict for f in frames.values()])
        scored = [c.similarity for c in characters if c.similarity is not None]
        reasons = [f.reason for f in frames.values() if f.reason]
        return cls(
            verdict=verdict, score=round(min(scored), 4) if scored else None,
            review=verdict.needs_review, characters=characters, frames=frames,
            reason=reasons[0] if reasons and verdict is not IdentityVerdict.PASS else None,
        )  # fmt: skip


class Scene(Document):
    index: int
    title: str
    description: str
    shot_type: ShotType
    keyframe_prompt: str
    end_keyframe_prompt: str
    motion_prompt: str
    asset_tags: list[str] = Field(default_factory=list)
    remapped_tags: dict[str, str] = Field(default_factory=dict)
    """Tags the storyboard model invented → the manifest tags they were mapped to."""
    reference_asset_ids: list[str] = Field(default_factory=list, max_length=3)
    keyframe_state: MediaState = MediaState.PENDING
    start_frame_object: str | None = None
    end_frame_object: str | None = None
    start_frame_reroll: int = 0
    end_frame_reroll: int = 0
    """Explicit regenerations ask for another result: the counter enters the basis."""
    clip_state: MediaState = MediaState.PENDING
    clip_operation: str | None = None
    clip_object: str | None = None
    clip_reroll: int = 0
    bases: dict[str, str] = Field(default_factory=dict)
    """start_frame, end_frame, clip → the digest of the inputs each was made from (P1)."""
    reused_from: dict[str, ReuseSource] = Field(default_factory=dict)
    """The artifacts this scene took from the index instead of making them."""
    pinned: list[str] = Field(default_factory=list)
    """Keyframes the user uploaded (start_frame, end_frame): inputs, not artifacts, so no stage
    makes them again; a regeneration unpins one."""
    error: str | None = None
    cost_usd: float = 0.0
    """What this scene's artifacts cost on this run; reused ones cost nothing."""
    identity: SceneIdentity | None = None
    """The identity check of its keyframes (None: not checked yet)."""

    def without_media(self, *, keyframes: bool, clip: bool) -> Scene:
        """A copy whose keyframes (less pinned uploads) and clip are to be found again, in the
        index or by making them; what it cost so far is not this run's."""
        after = self.model_copy(deep=True)
        after.error, after.cost_usd = None, 0.0
        roles = ["start_frame", "end_frame"] if keyframes else []
        if keyframes:
            after.keyframe_state = MediaState.PENDING
            # Checked again with the keyframes; an upload keeps the check it had.
            kept = {r: f for r, f in (after.identity.frames if after.identity else {}).items()
                    if r in after.pinned}  # fmt: skip
            after.identity = SceneIdentity.of_frames(kept) if kept else None
        for role in roles:
            if role not in after.pinned:
                setattr(after, f"{role}_object", None)
                after.bases.pop(role, None)
                after.reused_from.pop(role, None)
        if clip:
            after.clip_state = MediaState.PENDING
            after.clip_object = after.clip_operation = None
            after.bases.pop("clip", None)
            after.reused_from.pop("clip", None)
        return after
