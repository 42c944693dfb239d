"""The owner-scoped artifact index (P1): basis digest → the object that was made from it.

`owners/{owner_id}/artifacts/{digest}`: one document per artifact ever made for an owner,
created once (the first maker wins; a concurrent maker's identical work is simply not
indexed). A stage looks digests up before it calls a model; a hit is reused at no cost.
Nothing here can read another owner's entries: every path starts with the owner.

`projects/{id}/spend/{digest}`: what one project paid, one line per artifact it made. The
ledger is their sum, so a redelivered task that finds its line already written pays nothing
twice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from datetime import datetime

from google.api_core import exceptions as gexc
from google.cloud import firestore
from pydantic import Field

from shared.deadlines import grpc_call
from shared.models.common import Document, utcnow
from shared.models.projects import ReuseSource
from shared.repositories.documents import to_firestore

OWNERS = "owners"


class IndexEntry(Document):
    digest: str
    kind: str
    object_name: str
    content_type: str
    cost_usd: float = 0.0
    project_id: str
    checkpoint_id: str
    """The checkpoint the making stage records when it ends."""
    scene: int | None = None
    """The scene's position when it was made: provenance only, never part of any identity."""
    made_at: datetime = Field(default_factory=utcnow)

    def source(self) -> ReuseSource:
        """Where a reuse of this entry comes from, as scenes and plans say it."""
        return ReuseSource(project_id=self.project_id, checkpoint_id=self.checkpoint_id)


class SpendLine(Document):
    digest: str
    kind: str
    stage: str
    cost_usd: float
    at: datetime = Field(default_factory=utcnow)


class ArtifactIndex:
    def __init__(self, db: firestore.Client) -> None:
        self._db = db

    def _entries(self, owner_id: str) -> firestore.CollectionReference:
        ref: firestore.CollectionReference = (
            self._db.collection(OWNERS).document(owner_id).collection("artifacts")
        )
        return ref

    def find(self, owner_id: str, digests: Iterable[str]) -> dict[str, IndexEntry]:
        """The entries of those digests that exist, in one round trip."""
        refs = [self._entries(owner_id).document(d) for d in dict.fromkeys(digests)]
        if not refs:
            return {}
        return {
            s.id: IndexEntry.model_validate(s.to_dict())
            for s in self._db.get_all(refs, **grpc_call())
            if s.exists
        }

    def _spend(self, project_id: str) -> firestore.CollectionReference:
        ref: firestore.CollectionReference = (
            self._db.collection("projects").document(project_id).collection("spend")
        )
        return ref

    def record(self, owner_id: str, entry: IndexEntry, project_id: str, line: SpendLine) -> None:
        """Indexes what was made and what the project paid for it, before the scene says it
        has it: a crash in between finds the entry on redelivery and pays nothing twice."""
        self._spend(project_id).document(line.digest).set(to_firestore(line), **grpc_call())
        # A concurrent maker may have indexed the same inputs first; either object is right.
        with contextlib.suppress(gexc.AlreadyExists):
            self._entries(owner_id).document(entry.digest).create(
                to_firestore(entry), **grpc_call()
            )

    def spend(self, project_id: str, stage: str) -> list[SpendLine]:
        q = self._spend(project_id).where(filter=firestore.FieldFilter("stage", "==", stage))
        return [SpendLine.model_validate(s.to_dict()) for s in q.stream(**grpc_call())]
