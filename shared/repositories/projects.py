"""Projects, their scenes, checkpoints and artifact versions in Firestore.

Every write that decides something about a project (a stage starting or finishing, a
checkpoint, continue, resume, stop, a draft edit) goes through `ProjectRepository.change()`:
a revision claim (shared/repositories/revisions.py) serialises the writers, and the claim,
the project update and the documents the change creates land in one batch. So a stage task
delivered three times at once records one checkpoint, two continues cannot take one branch,
and draft edits never lose each other or repeat a version number. Scene documents written
while a stage runs are not guarded: one delivery at a time holds a stage's lease.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from google.api_core import exceptions as gexc
from google.cloud import firestore

from shared.deadlines import grpc_call
from shared.errors import BadRequest, ContentionRetriesExhausted, NotFound
from shared.models.checkpoints import ArtifactVersion, Checkpoint, Draft
from shared.models.common import new_id, utcnow
from shared.models.projects import Project, ProjectStatus, Scene
from shared.repositories.documents import changed_fields, from_firestore, to_firestore
from shared.repositories.revisions import (
    UNCERTAIN_COMMIT,
    back_off,
    lost_race,
    revision_doc,
    revision_ref,
)

PROJECTS = "projects"
ResultT = TypeVar("ResultT")


@dataclass
class ProjectChange(Generic[ResultT]):
    """What a planned change writes. The planner edits `project` (a copy) in place."""

    project: Project
    result: ResultT
    summary: str = ""
    scenes: list[Scene] | None = None
    """Replaces every scene document when set."""
    checkpoint: Checkpoint | None = None
    draft: Draft | None = None
    artifacts: list[ArtifactVersion] = field(default_factory=list)
    write: bool = True
    """False: the plan decided to write nothing (see `unchanged`)."""


def unchanged(project: Project, result: ResultT) -> ProjectChange[ResultT]:
    """A plan's answer when there is nothing to write."""
    return ProjectChange(project, result, write=False)


class ProjectRepository:
    def __init__(self, db: firestore.Client, *, max_attempts: int = 16) -> None:
        self._db = db
        self._max_attempts = max_attempts

    def ref(self, project_id: str) -> firestore.DocumentReference:
        ref: firestore.DocumentReference = self._db.collection(PROJECTS).document(project_id)
        return ref

    def create(self, project: Project) -> None:
        data = {**to_firestore(project), "sort_created_at": _sort_key(project), "revision": 0}
        self.ref(project.id).create(data, **grpc_call())

    def change(self, project_id: str, plan: Callable[[Project], ProjectChange[ResultT]]) -> ResultT:
        """Plans and commits a change under a revision claim. `plan` may raise to abort, or
        answer `unchanged(...)` to write nothing; reads it makes (a draft, the scenes) are
        consistent with the project it was given, since every write of them claims a
        revision too."""
        ref = self.ref(project_id)
        for attempt in range(self._max_attempts):
            data = ref.get(**grpc_call()).to_dict()
            current = from_firestore(Project, data)
            if data is None or current is None:
                raise NotFound(f"project {project_id} does not exist")
            planned = plan(current.model_copy(deep=True))
            if not planned.write:
                return planned.result
            revision, token = (data.get("revision") or 0) + 1, new_id()
            try:
                self._commit(current, planned, revision, token)
                return planned.result
            except (gexc.AlreadyExists, *UNCERTAIN_COMMIT) as error:
                last = attempt == self._max_attempts - 1
                if not lost_race(error, ref, revision, token, last_attempt=last):
                    return planned.result
                back_off(attempt)
        raise ContentionRetriesExhausted(
            f"project {project_id} is being changed by many writers at once; try again"
        )

    def _commit(
        self, current: Project, planned: ProjectChange[Any], revision: int, token: str
    ) -> None:
        after = planned.project
        after.updated_at = utcnow()
        fields = {**changed_fields(current, after), "revision": revision}
        ref = self.ref(current.id)
        batch = self._db.batch()
        # The claim goes first: if it fails, nothing else of the batch may land.
        batch.create(revision_ref(ref, revision), revision_doc(planned.summary, token))
        batch.update(ref, fields)
        if planned.scenes is not None:
            for scene in planned.scenes:
                batch.set(self._scene_ref(current.id, scene.index), to_firestore(scene))
        if planned.checkpoint is not None:
            batch.create(
                ref.collection("checkpoints").document(planned.checkpoint.id),
                to_firestore(planned.checkpoint),
            )
        if planned.draft is not None:
            batch.set(
                ref.collection("drafts").document(planned.draft.checkpoint_id),
                to_firestore(planned.draft),
            )
        for artifact in planned.artifacts:
            batch.create(ref.collection("artifacts").document(artifact.id), to_firestore(artifact))
        batch.commit(**grpc_call())

    def get(self, project_id: str) -> Project | None:
        return from_firestore(Project, self.ref(project_id).get(**grpc_call()).to_dict())

    def list_for_owner(
        self, owner_id: str, status: str | None, limit: int, after: str | None
    ) -> tuple[list[Project], str | None]:
        q = (
            self._db.collection(PROJECTS)
            .where(filter=firestore.FieldFilter("owner_id", "==", owner_id))
            .where(filter=firestore.FieldFilter("is_deleted", "==", False))
        )
        if status is not None:
            q = q.where(filter=firestore.FieldFilter("status", "==", status))
        if after is not None:
            key = _decode_cursor(after, status)
            q = q.where(filter=firestore.FieldFilter("sort_created_at", "<", key))
        snapshots = list(
            q.order_by("sort_created_at", direction=firestore.Query.DESCENDING)
            .limit(limit + 1)
            .stream(**grpc_call())
        )
        items = [Project.model_validate(s.to_dict()) for s in snapshots[:limit]]
        more = len(snapshots) > limit and items
        return items, _encode_cursor(_sort_key(items[-1]), status) if more else None

    def with_status(self, statuses: list[ProjectStatus], limit: int = 500) -> list[Project]:
        """Every owner's projects in these statuses, for the sweeper (running ones are few)."""
        values = [status.value for status in statuses]
        q = self._db.collection(PROJECTS).where(
            filter=firestore.FieldFilter("status", "in", values)
        )
        return [Project.model_validate(s.to_dict()) for s in q.limit(limit).stream(**grpc_call())]

    def forks_of(self, owner_id: str, source_id: str) -> list[Project]:
        q = (
            self._db.collection(PROJECTS)
            .where(filter=firestore.FieldFilter("forked_from", "==", source_id))
            .where(filter=firestore.FieldFilter("owner_id", "==", owner_id))
        )
        found = [Project.model_validate(s.to_dict()) for s in q.limit(500).stream(**grpc_call())]
        return sorted((p for p in found if not p.is_deleted), key=lambda p: (p.created_at, p.id))

    # ----- scenes ------------------------------------------------------------------------------

    def _scenes(self, project_id: str) -> firestore.CollectionReference:
        scenes: firestore.CollectionReference = self.ref(project_id).collection("scenes")
        return scenes

    def _scene_ref(self, project_id: str, index: int) -> firestore.DocumentReference:
        ref: firestore.DocumentReference = self._scenes(project_id).document(f"{index:03d}")
        return ref

    def put_scenes(self, project_id: str, scenes: list[Scene]) -> None:
        batch = self._db.batch()
        for scene in scenes:
            batch.set(self._scene_ref(project_id, scene.index), to_firestore(scene))
        batch.commit(**grpc_call())

    def scenes(self, project_id: str) -> list[Scene]:
        found = [
            Scene.model_validate(s.to_dict())
            for s in self._scenes(project_id).stream(**grpc_call())
        ]
        return sorted(found, key=lambda s: s.index)

    def save_scenes(self, project_id: str, changes: list[tuple[Scene, Scene]]) -> None:
        """The changed fields of each (before, after) pair, in one batch."""
        batch, writes = self._db.batch(), 0
        for before, after in changes:
            fields = changed_fields(before, after)
            if fields:
                batch.update(self._scene_ref(project_id, after.index), fields)
                writes += 1
        if writes:
            batch.commit(**grpc_call())

    # ----- checkpoints and artifacts (immutable: created once, never updated) ---------------

    def put_checkpoint(self, project_id: str, checkpoint: Checkpoint) -> None:
        """A fork's first checkpoint, written before its project document exists."""
        ref = self.ref(project_id).collection("checkpoints").document(checkpoint.id)
        ref.set(to_firestore(checkpoint), **grpc_call())

    def checkpoints(self, project_id: str) -> list[Checkpoint]:
        found = [
            Checkpoint.model_validate(s.to_dict())
            for s in self.ref(project_id).collection("checkpoints").stream(**grpc_call())
        ]
        return sorted(found, key=lambda c: (c.created_at, c.id))

    def checkpoint(self, project_id: str, checkpoint_id: str) -> Checkpoint | None:
        ref = self.ref(project_id).collection("checkpoints").document(checkpoint_id)
        return from_firestore(Checkpoint, ref.get(**grpc_call()).to_dict())

    def draft(self, project_id: str, checkpoint_id: str) -> Draft:
        ref = self.ref(project_id).collection("drafts").document(checkpoint_id)
        return from_firestore(Draft, ref.get(**grpc_call()).to_dict()) or Draft(
            checkpoint_id=checkpoint_id
        )

    def artifacts(self, project_id: str) -> list[ArtifactVersion]:
        found = [
            ArtifactVersion.model_validate(s.to_dict())
            for s in self.ref(project_id).collection("artifacts").stream(**grpc_call())
        ]
        return sorted(found, key=lambda a: (a.scene, a.kind, a.version))


def _encode_cursor(key: str, status: str | None) -> str:
    payload = json.dumps({"k": key, "s": status}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


def _decode_cursor(cursor: str, status: str | None) -> str:
    """The sort key to continue after; a cursor this API did not issue is a bad request."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode()))
        key, shape = payload["k"], payload["s"]
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
        raise BadRequest("the cursor is not one this API issued") from error
    if not isinstance(key, str) or shape != status:
        raise BadRequest("the cursor belongs to a different listing: keep the filters the same")
    return key


def _sort_key(project: Project) -> str:
    return f"{project.created_at.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}\x1f{project.id}"
