"""Provenance by content (P1): every artifact is keyed by a digest of exactly its inputs.

A basis is the canonical JSON of what a model call consumed; its SHA-256 is the artifact's
identity in the owner's artifact index. Nothing a model never sees enters a basis (a scene's
title, a project's name), and nothing derived from a scene's position does: inserting,
deleting or reordering scenes leaves every other scene's digests as they were.

Media objects are content-addressed (`pipeline/<sha256>.<ext>`, asset images by the hash of
their upload), so a basis names its media inputs by content hash without reading them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from shared.models.assets import Asset
from shared.models.projects import Project, Scene
from shared.pipeline.ports import StoryboardRequest
from shared.pipeline.storyboard import describe_assets

STITCH_SETTINGS = {"stitcher": "ffmpeg-concat-1"}
"""What the stitcher does besides the clips; a change of stitcher changes every final video."""


class BasisKind(StrEnum):
    STORYBOARD = "storyboard"
    KEYFRAME = "keyframe"
    CLIP = "clip"
    FINAL_VIDEO = "final_video"
    IDENTITY_CHECK = "identity_check"
    """Not media: what the model service saw in a keyframe (shared/pipeline/identity.py)."""


def digest(basis: Mapping[str, Any]) -> str:
    canonical = json.dumps(basis, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def content_hash(object_name: str) -> str:
    """The SHA-256 that a content-addressed object is named by."""
    stem = object_name.rsplit("/", 1)[-1].split(".", 1)[0]
    if len(stem) != 64:
        raise ValueError(f"{object_name} is not a content-addressed object")
    return stem


def take_seed(take: int, reroll: int) -> int:
    """The seed a model gets: the project's take, or a new one per explicit re-roll."""
    if reroll == 0:
        return take
    mixed = hashlib.sha256(f"{take}:{reroll}".encode()).digest()
    return int.from_bytes(mixed[:4], "big") & 0x7FFFFFFF


def keyframe_prompt(prompt: str, asset_tags: Sequence[str], by_tag: Mapping[str, Asset]) -> str:
    """The prompt as sent: the scene's own words and what the snapshot says of its assets."""
    return prompt + describe_assets([t for t in asset_tags if t in by_tag], by_tag)


def keyframe_basis(
    *, prompt: str, aspect_ratio: str, model: str, seed: int, reroll: int,
    reference_hashes: Sequence[str],
) -> dict[str, Any]:  # fmt: skip
    return {
        "kind": BasisKind.KEYFRAME.value, "prompt": prompt, "aspect_ratio": aspect_ratio,
        "model": model, "seed": seed, "reroll": reroll, "references": list(reference_hashes),
    }  # fmt: skip


def clip_basis(
    *, start_hash: str, end_hash: str | None, prompt: str, model: str, seconds: int,
    audio: bool, aspect_ratio: str, seed: int, reroll: int,
) -> dict[str, Any]:  # fmt: skip
    return {
        "kind": BasisKind.CLIP.value, "start": start_hash, "end": end_hash, "prompt": prompt,
        "model": model, "seconds": seconds, "audio": audio, "aspect_ratio": aspect_ratio,
        "seed": seed, "reroll": reroll,
    }  # fmt: skip


def final_video_basis(clip_hashes: Sequence[str]) -> dict[str, Any]:
    return {"kind": BasisKind.FINAL_VIDEO.value, "clips": list(clip_hashes), **STITCH_SETTINGS}


def storyboard_basis(request: StoryboardRequest, model: str, seed: int) -> dict[str, Any]:
    """The storyboard model's inputs: the request (the snapshot's assets as it is told of
    them), the model and the take."""
    return {
        "kind": BasisKind.STORYBOARD.value, "prompt": request.prompt, "style": request.style,
        "model": model, "aspect_ratio": request.aspect_ratio, "scene_count": request.scene_count,
        "clip_seconds": request.clip_seconds, "seed": seed,
        "assets": [a.model_dump(mode="json") for a in request.assets],
    }  # fmt: skip


# ----- what a stage would send, for the runner and for plans alike ---------------------------


@dataclass(frozen=True)
class KeyframeSpec:
    role: str
    """start_frame or end_frame"""
    prompt: str
    """As sent to the model."""
    seed: int
    reference_ids: list[str]
    digest: str


def keyframe_specs(
    project: Project, scene: Scene, by_id: Mapping[str, Asset]
) -> list[KeyframeSpec]:
    """The scene's two keyframes as the image model would be asked for them (less the ones the
    user uploaded)."""
    by_tag = {a.manifest_tag: a for a in by_id.values()}
    references = [i for i in scene.reference_asset_ids if i in by_id and by_id[i].image]
    # The model sees each image labelled with its tag: the pairing is part of the input.
    hashes = [f"{by_id[i].manifest_tag}:{by_id[i].image.sha256}" for i in references]  # type: ignore[union-attr]
    specs = []
    for role, words, reroll in (
        ("start_frame", scene.keyframe_prompt, scene.start_frame_reroll),
        ("end_frame", scene.end_keyframe_prompt, scene.end_frame_reroll),
    ):
        if role in scene.pinned:
            continue  # the user's upload stands as it is
        prompt = keyframe_prompt(words, scene.asset_tags, by_tag)
        seed = take_seed(project.take_seed, reroll)
        basis = keyframe_basis(
            prompt=prompt, aspect_ratio=project.aspect_ratio, model=project.image_model,
            seed=seed, reroll=reroll, reference_hashes=hashes,
        )  # fmt: skip
        specs.append(KeyframeSpec(role, prompt, seed, references, digest(basis)))
    return specs


def clip_digest(project: Project, scene: Scene, start_hash: str, end_hash: str | None) -> str:
    return digest(
        clip_basis(
            start_hash=start_hash, end_hash=end_hash, prompt=scene.motion_prompt,
            model=project.video_model, seconds=project.clip_seconds, audio=project.audio,
            aspect_ratio=project.aspect_ratio, seed=take_seed(project.take_seed, scene.clip_reroll),
            reroll=scene.clip_reroll,
        )
    )  # fmt: skip
