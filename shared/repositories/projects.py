"""Projects, their scenes, checkpoints and artifacts in Firestore."""

from __future__ import annotations

from google.cloud import firestore

from shared.models.checkpoints import ArtifactVersion, Checkpoint, Draft
from shared.models.common import utcnow
from shared.models.projects import Project, Scene
from shared.repositories.documents import changed_fields, from_firestore, to_firestore

PROJECTS = "projects"


class ProjectRepository:
    def __init__(self, db: firestore.Client) -> None:
        self._db = db

    def ref(self, project_id: str) -> firestore.DocumentReference:
        ref: firestore.DocumentReference = self._db.collection(PROJECTS).document(project_id)
        return ref

    def create(self, project: Project) -> None:
        data = {**to_firestore(project), "sort_created_at": _sort_key(project)}
        self.ref(project.id).create(data)

    def get(self, project_id: str) -> Project | None:
        return from_firestore(Project, self.ref(project_id).get().to_dict())

    def save(self, before: Project, after: Project) -> Project:
        after.updated_at = utcnow()
        fields = changed_fields(before, after)
        if fields:
            self.ref(after.id).update(fields)
        return after.model_copy(deep=True)

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
            q = q.where(filter=firestore.FieldFilter("sort_created_at", "<", after))
        snapshots = list(
            q.order_by("sort_created_at", direction=firestore.Query.DESCENDING)
            .limit(limit + 1)
            .stream()
        )
        items = [Project.model_validate(s.to_dict()) for s in snapshots[:limit]]
        cursor = _sort_key(items[-1]) if len(snapshots) > limit and items else None
        return items, cursor

    # ----- scenes ------------------------------------------------------------------------------

    def _scenes(self, project_id: str) -> firestore.CollectionReference:
        scenes: firestore.CollectionReference = self.ref(project_id).collection("scenes")
        return scenes

    def put_scenes(self, project_id: str, scenes: list[Scene]) -> None:
        batch = self._db.batch()
        for scene in scenes:
            batch.set(self._scenes(project_id).document(f"{scene.index:03d}"), to_firestore(scene))
        batch.commit()

    def scenes(self, project_id: str) -> list[Scene]:
        found = [Scene.model_validate(s.to_dict()) for s in self._scenes(project_id).stream()]
        return sorted(found, key=lambda s: s.index)

    def save_scene(self, project_id: str, before: Scene, after: Scene) -> Scene:
        fields = changed_fields(before, after)
        if fields:
            self._scenes(project_id).document(f"{after.index:03d}").update(fields)
        return after.model_copy(deep=True)

    # ----- checkpoints and artifacts (immutable: created once, never updated) ---------------

    def add_checkpoint(self, project_id: str, checkpoint: Checkpoint) -> None:
        ref = self.ref(project_id).collection("checkpoints").document(checkpoint.id)
        ref.create(to_firestore(checkpoint))

    def checkpoints(self, project_id: str) -> list[Checkpoint]:
        found = [
            Checkpoint.model_validate(s.to_dict())
            for s in self.ref(project_id).collection("checkpoints").stream()
        ]
        return sorted(found, key=lambda c: (c.created_at, c.id))

    def checkpoint(self, project_id: str, checkpoint_id: str) -> Checkpoint | None:
        ref = self.ref(project_id).collection("checkpoints").document(checkpoint_id)
        return from_firestore(Checkpoint, ref.get().to_dict())

    def draft(self, project_id: str, checkpoint_id: str) -> Draft:
        ref = self.ref(project_id).collection("drafts").document(checkpoint_id)
        return from_firestore(Draft, ref.get().to_dict()) or Draft(checkpoint_id=checkpoint_id)

    def save_draft(self, project_id: str, draft: Draft) -> None:
        ref = self.ref(project_id).collection("drafts").document(draft.checkpoint_id)
        ref.set(to_firestore(draft))

    def add_artifact(self, project_id: str, artifact: ArtifactVersion) -> None:
        ref = self.ref(project_id).collection("artifacts").document(artifact.id)
        ref.create(to_firestore(artifact))

    def artifacts(self, project_id: str) -> list[ArtifactVersion]:
        found = [
            ArtifactVersion.model_validate(s.to_dict())
            for s in self.ref(project_id).collection("artifacts").stream()
        ]
        return sorted(found, key=lambda a: (a.scene, a.kind, a.version))


def _sort_key(project: Project) -> str:
    return f"{project.created_at.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}\x1f{project.id}"
