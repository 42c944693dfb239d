"""The identity check of keyframes: are the characters a scene places recognisable in them?

The model service finds the faces in a keyframe and embeds them (its `faces` API); each
character the scene places (its CHARACTER tags with a face group in the project's manifest
snapshot) is compared with them through the embeddings of its face group's members, of the
same embedding model only (embeddings of different models are not comparable). A character's
score is its best cosine similarity; below the threshold the runner makes the keyframe again
with a re-roll (shared/pipeline/runner.py), and a scene still below is flagged for review.

A check is keyed like an artifact (P1): its basis is the keyframe's content and the
characters' embeddings, so a redelivered chunk, a continue or another project that shows the
same keyframe for the same faces reads the result from the owner's index instead of asking
again. A check that could not be made (the service down or refusing) is recorded as
unchecked, flagged, and not indexed: it is never passed, and never remembered as a result.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from shared.models.assets import Asset, AssetType
from shared.models.projects import (
    CharacterScore,
    FrameIdentity,
    IdentityVerdict,
    Project,
    Scene,
    SceneIdentity,
    Stage,
    worst,
)
from shared.pipeline.concurrency import ProviderCalls
from shared.pipeline.face_service import FaceFinder, FacesUnavailable, FoundFace
from shared.pipeline.provenance import BasisKind, content_hash, digest
from shared.repositories.artifacts import ArtifactIndex, IndexEntry, SpendLine
from shared.settings import IdentitySettings
from shared.storage import BlobStore

MAX_KEYFRAME_BYTES = 20 * 1024 * 1024
CONTENT_TYPES = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg",
                 "webp": "image/webp", "gif": "image/gif"}  # fmt: skip


@dataclass(frozen=True)
class Character:
    """A character the scene places, with its face group's embeddings by model."""

    tag: str
    name: str
    face_group_id: str | None
    embeddings: dict[str, list[list[float]]] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckResult:
    """What the model service saw: the faces found, their model, each character's best
    similarity (None: no embedding of that model to compare with)."""

    faces: int
    model: str | None
    similarity: dict[str, float | None]


def placed_characters(scene: Scene, by_id: Mapping[str, Asset]) -> list[Character] | str:
    """The characters to look for in the scene's keyframes, one per face group; or why there
    are none."""
    if not by_id:
        return "the project has no manifest"
    by_tag = {a.manifest_tag: a for a in by_id.values()}
    placed = [
        by_tag[t] for t in scene.asset_tags
        if t in by_tag and by_tag[t].asset_type is AssetType.CHARACTER
    ]  # fmt: skip
    if not placed:
        return "the scene places no character"
    characters, groups = [], set()
    for asset in placed:
        group = asset.face_group_id
        if group is not None and group in groups:
            continue  # two tags of one person: one check
        members = [a for a in by_id.values() if group is not None and a.face_group_id == group]
        embeddings: dict[str, list[list[float]]] = {}
        for member in members or [asset]:
            if member.face_embedding is not None:
                embeddings.setdefault(member.face_embedding.model, []).append(
                    member.face_embedding.vector
                )
        if group is not None:
            groups.add(group)
        characters.append(Character(asset.manifest_tag, asset.name, group, embeddings))
    if not any(c.embeddings for c in characters):
        tags = ", ".join(c.tag for c in characters)
        return f"no character the scene places has a face in the manifest ({tags})"
    return characters


def check_basis(keyframe_hash: str, characters: list[Character]) -> dict[str, object]:
    def hashed(vectors: list[list[float]]) -> str:
        return hashlib.sha256(json.dumps(vectors, separators=(",", ":")).encode()).hexdigest()

    return {
        "kind": BasisKind.IDENTITY_CHECK.value,
        "keyframe": keyframe_hash,
        "characters": [
            {"tag": c.tag, "group": c.face_group_id,
             "embeddings": {m: hashed(v) for m, v in sorted(c.embeddings.items())}}
            for c in characters
        ],
    }  # fmt: skip


def _unit(vectors: list[list[float]]) -> np.ndarray:
    matrix = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0, 1.0, norms)


def compare(faces: list[FoundFace], characters: list[Character]) -> CheckResult:
    model = faces[0].model if faces else None
    found = _unit([f.embedding for f in faces if f.model == model]) if faces else None
    similarity: dict[str, float | None] = {}
    for character in characters:
        known = character.embeddings.get(model or "")
        if found is None or not known:
            similarity[character.tag] = None
            continue
        similarity[character.tag] = round(float((found @ _unit(known).T).max()), 4)
    return CheckResult(faces=len(faces), model=model, similarity=similarity)


def judged(
    result: CheckResult, characters: list[Character], threshold: float
) -> list[CharacterScore]:
    scores = []
    for c in characters:
        score = CharacterScore(tag=c.tag, name=c.name, face_group_id=c.face_group_id,
                               verdict=IdentityVerdict.SKIPPED)  # fmt: skip
        similarity = result.similarity.get(c.tag)
        if not c.embeddings:
            score.reason = f"{c.tag} has no face embedding in the manifest"
        elif result.faces == 0:
            score.verdict, score.reason = IdentityVerdict.BELOW_THRESHOLD, "no face in the keyframe"
        elif similarity is None:
            models = ", ".join(sorted(c.embeddings))
            score.reason = (f"the faces of {c.tag} were embedded by {models}; the model service "
                            f"embeds with {result.model}: not comparable")  # fmt: skip
        else:
            score.similarity = similarity
            score.verdict = (
                IdentityVerdict.PASS if similarity >= threshold else IdentityVerdict.BELOW_THRESHOLD
            )
        scores.append(score)
    return scores


def frame_identity(
    result: CheckResult, characters: list[Character], threshold: float, **extra: object
) -> FrameIdentity:
    scores = judged(result, characters, threshold)
    verdict = worst([s.verdict for s in scores])
    reasons = [s.reason for s in scores if s.reason and s.verdict is verdict]
    return FrameIdentity.model_validate({
        "verdict": verdict, "characters": scores, "faces": result.faces, "model": result.model,
        "reason": reasons[0] if reasons and verdict is not IdentityVerdict.PASS else None,
        **extra,
    })  # fmt: skip


def unchecked(characters: list[Character], reason: str) -> FrameIdentity:
    return FrameIdentity(
        verdict=IdentityVerdict.UNCHECKED, reason=f"unchecked: {reason}",
        characters=[CharacterScore(tag=c.tag, name=c.name, face_group_id=c.face_group_id,
                                   verdict=IdentityVerdict.UNCHECKED) for c in characters],
    )  # fmt: skip


def weakest(frame: FrameIdentity) -> float:
    """What re-rolls compete on: the lowest similarity of the keyframe's characters."""
    scored = [c.similarity for c in frame.characters if c.similarity is not None]
    return min(scored) if scored else -1.0


def identity_reroll(spec_digest: str, attempt: int) -> int:
    """The re-roll counter of the n-th automatic remake of a keyframe: derived from the
    keyframe's inputs, so a redelivery asks for the same remake (found in the index, paid
    once), and from 1,000,000 up, above any version number an explicit regeneration uses."""
    mixed = hashlib.sha256(f"{spec_digest}:identity:{attempt}".encode()).digest()
    return 1_000_000 + int.from_bytes(mixed[:4], "big") % 1_000_000_000


def media_content_type(object_name: str) -> str:
    return CONTENT_TYPES.get(object_name.rsplit(".", 1)[-1].lower(), "application/octet-stream")


class IdentityChecks:
    """Checks keyframes against the characters a scene places: from the index when the same
    check was made before, else through the model service, bounded by `calls`."""

    def __init__(
        self, settings: IdentitySettings, blobs: BlobStore, bucket: str, index: ArtifactIndex,
        finders: Callable[[], FaceFinder] | None,
    ) -> None:  # fmt: skip
        self.settings = settings
        self._blobs = blobs
        self._bucket = bucket
        self._index = index
        self._finders = finders

    def finder(self) -> FaceFinder | None:
        """A client for one event loop, or None when no model service is configured."""
        return self._finders() if self._finders is not None else None

    def calls(self) -> ProviderCalls:
        return ProviderCalls(self.settings.concurrency)

    def characters(self, scene: Scene, by_id: Mapping[str, Asset]) -> list[Character] | str:
        placed = placed_characters(scene, by_id)
        if isinstance(placed, list) and self._finders is None:
            return "no model service is configured for identity checks"
        return placed

    async def check(
        self, project: Project, scene: int, object_name: str, characters: list[Character],
        finder: FaceFinder, calls: ProviderCalls, made_in: str,
    ) -> FrameIdentity:  # fmt: skip
        threshold = self.settings.threshold
        key = digest(check_basis(content_hash(object_name), characters))
        known = await asyncio.to_thread(self._known, project.owner_id, key)
        if known is not None:
            return frame_identity(known, characters, threshold, basis=key, reused=True)
        started = time.monotonic()

        async def ask() -> CheckResult:
            image = await asyncio.to_thread(
                self._blobs.get, self._bucket, object_name, max_bytes=MAX_KEYFRAME_BYTES
            )
            if image is None:
                raise FacesUnavailable(f"the keyframe {object_name} is missing")
            faces = await finder.faces(image, media_content_type(object_name))
            result = compare(faces, characters)
            await asyncio.to_thread(self._keep, project, key, result, scene, made_in)
            return result

        try:
            result, _ = await calls.once(key, ask)
        except FacesUnavailable as error:
            return unchecked(characters, str(error))
        seconds = round(time.monotonic() - started, 3)
        return frame_identity(result, characters, threshold, basis=key, seconds=seconds,
                              checks=1)  # fmt: skip

    def check_one(
        self, project: Project, scene: int, object_name: str, characters: list[Character],
        made_in: str,
    ) -> FrameIdentity:  # fmt: skip
        """One check in an event loop of its own (an uploaded or regenerated keyframe)."""
        finder = self.finder()
        if finder is None:
            raise ValueError("no model service is configured for identity checks")
        client: FaceFinder = finder

        async def one() -> FrameIdentity:
            try:
                return await self.check(project, scene, object_name, characters, client,
                                        self.calls(), made_in)  # fmt: skip
            finally:
                await client.aclose()

        return asyncio.run(one())

    def _known(self, owner_id: str, key: str) -> CheckResult | None:
        hit = self._index.find(owner_id, [key]).get(key)
        data = self._blobs.get(self._bucket, hit.object_name, max_bytes=2**20) if hit else None
        if data is None:
            return None
        stored = json.loads(data)
        return CheckResult(faces=stored["faces"], model=stored["model"],
                           similarity=stored["similarity"])  # fmt: skip

    def _keep(
        self, project: Project, key: str, result: CheckResult, scene: int, made_in: str
    ) -> None:
        """Stored and indexed like an artifact, with its spend line on the keyframes stage."""
        data = json.dumps(result.__dict__, sort_keys=True, separators=(",", ":")).encode()
        name = f"pipeline/{hashlib.sha256(data).hexdigest()}.json"
        self._blobs.put(self._bucket, name, data, "application/json")
        cost = self.settings.cost_per_check_usd
        kind = BasisKind.IDENTITY_CHECK.value
        entry = IndexEntry(
            digest=key, kind=kind, object_name=name, content_type="application/json",
            cost_usd=cost, project_id=project.id, checkpoint_id=made_in, scene=scene,
        )  # fmt: skip
        line = SpendLine(digest=key, kind=kind, stage=Stage.KEYFRAMES.value, cost_usd=cost)
        self._index.record(project.owner_id, entry, project.id, line)


def with_frame(scene: Scene, role: str, frame: FrameIdentity) -> SceneIdentity:
    """The scene's identity with one keyframe's check replaced."""
    frames = dict(scene.identity.frames) if scene.identity else {}
    frames[role] = frame
    return SceneIdentity.of_frames(frames)


def review_list(scenes: list[Scene]) -> list[int]:
    return [s.index for s in scenes if s.identity is not None and s.identity.review]
