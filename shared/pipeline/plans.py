"""What a continue would do, before it runs (P1): per remaining stage and scene, reuse (and
from where) or make, with the cost at list prices of what is to be made.

The plan walks the same digests the stages compute (shared/pipeline/provenance.py) against the
owner's artifact index. A keyframe to be made has unknown content, so the clip made from it is
planned as made too; the stitch is reused only when every clip is known and their final video
is in the index.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel

from shared.models.assets import Asset
from shared.models.projects import MediaState, Project, ReuseSource, Scene, Stage
from shared.pipeline.prices import estimate_clips, estimate_keyframes
from shared.pipeline.provenance import (
    clip_digest,
    content_hash,
    digest,
    final_video_basis,
    keyframe_specs,
)
from shared.repositories.artifacts import ArtifactIndex, IndexEntry


class PlanStep(BaseModel):
    stage: Stage
    scene: int | None
    artifact: Literal["storyboard", "start_frame", "end_frame", "clip", "final_video"]
    action: Literal["reuse", "make"]
    source: ReuseSource | None = None
    cost_usd: float = 0.0


class StagePlan(BaseModel):
    stage: Stage
    reuse: int
    make: int
    cost_usd: float


class Plan(BaseModel):
    stages: list[StagePlan]
    steps: list[PlanStep]
    reuse: int
    make: int
    cost_usd: float
    """At list prices, of what is to be made; what is reused costs nothing."""


PLANNED = "planned:"


def _hash(name: str) -> str:
    """The content hash of a stored object, or the digest that stands for one to be made."""
    return name.removeprefix(PLANNED) if name.startswith(PLANNED) else content_hash(name)


def plan_stages(
    project: Project, scenes: list[Scene], stages: list[Stage], by_id: Mapping[str, Asset],
    index: ArtifactIndex,
) -> Plan:  # fmt: skip
    """`scenes` as the first of `stages` will find them (media of later stages cleared)."""
    steps: list[PlanStep] = []
    frames: dict[int, dict[str, str | None]] = {
        s.index: {"start_frame": s.start_frame_object, "end_frame": s.end_frame_object}
        for s in scenes
    }
    clips: dict[int, str | None] = {s.index: s.clip_object for s in scenes}
    planned: set[str] = set()
    """Digests this plan makes: a scene with the same inputs reuses what an earlier one made,
    as the stages do."""

    def step(stage: Stage, scene: int | None, artifact: str, key: str | None,
             hit: IndexEntry | None, cost: float) -> None:  # fmt: skip
        if hit is None and key in planned:
            action, cost = "reuse", 0.0
        else:
            action = "reuse" if hit else "make"
            cost = 0.0 if hit else cost
        if key is not None and hit is None:
            planned.add(key)
        steps.append(PlanStep(stage=stage, scene=scene, artifact=artifact, action=action,
                              source=hit.source() if hit else None, cost_usd=cost))  # fmt: skip

    if Stage.KEYFRAMES in stages:
        todo = [s for s in scenes if s.keyframe_state is not MediaState.DONE]
        specs = {s.index: keyframe_specs(project, s, by_id) for s in todo}
        known = index.find(project.owner_id, [k.digest for ks in specs.values() for k in ks])
        for scene in todo:
            for spec in specs[scene.index]:
                hit = known.get(spec.digest)
                price = estimate_keyframes(project.image_model, 1, len(spec.reference_ids))
                step(Stage.KEYFRAMES, scene.index, spec.role, spec.digest, hit, price)
                # A keyframe to be made has no content yet: its digest stands for it.
                frames[scene.index][spec.role] = hit.object_name if hit else PLANNED + spec.digest
    if Stage.CLIPS in stages:
        todo = [
            s for s in scenes if Stage.KEYFRAMES in stages or s.clip_state is not MediaState.DONE
        ]
        keys: dict[int, str | None] = {}
        for scene in todo:
            start, end = frames[scene.index]["start_frame"], frames[scene.index]["end_frame"]
            keys[scene.index] = clip_digest(
                project, scene, _hash(start), _hash(end) if end else None
            ) if start else None  # fmt: skip
        known = index.find(project.owner_id, [k for k in keys.values() if k])
        price = estimate_clips(project.video_model, 1, project.clip_seconds, project.audio)
        for scene in todo:
            key = keys[scene.index]
            hit = known.get(key) if key else None
            step(Stage.CLIPS, scene.index, "clip", key, hit, price)
            clips[scene.index] = hit.object_name if hit else PLANNED + (key or "")
    if Stage.STITCH in stages:
        names = [clips[s.index] for s in scenes]
        hit = None
        if all(names) and not any((n or "").startswith(PLANNED) for n in names):
            key = digest(final_video_basis([content_hash(n or "") for n in names]))
            hit = index.find(project.owner_id, [key]).get(key)
        steps.append(PlanStep(
            stage=Stage.STITCH, scene=None, artifact="final_video",
            action="reuse" if hit else "make", source=hit.source() if hit else None,
        ))  # fmt: skip
    by_stage = [
        StagePlan(
            stage=stage,
            reuse=sum(1 for s in steps if s.stage is stage and s.action == "reuse"),
            make=sum(1 for s in steps if s.stage is stage and s.action == "make"),
            cost_usd=round(sum(s.cost_usd for s in steps if s.stage is stage), 6),
        )
        for stage in stages
        if stage is not Stage.STORYBOARD
    ]
    return Plan(
        stages=by_stage, steps=steps,
        reuse=sum(s.reuse for s in by_stage), make=sum(s.make for s in by_stage),
        cost_usd=round(sum(s.cost_usd for s in by_stage), 6),
    )  # fmt: skip
