"""Jobs in Firestore, with a lease so that one delivery of a task works on a job at a time.

Cloud Tasks delivers at least once, and a crashed worker's task comes back. A delivery
starts work only by creating `jobs/{id}/attempts/{n+1}` (exactly one creator wins) while no
other lease is live; the winner renews `lease_until` as it goes and checks that `attempts`
is still its own, so a worker that stalled past its lease notices and stops.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from shared.deadlines import grpc_call
from shared.models.common import utcnow
from shared.models.jobs import Job, JobStatus
from shared.repositories.documents import changed_fields, from_firestore, to_firestore

JOBS = "jobs"
ACTIVE = [JobStatus.QUEUED.value, JobStatus.RUNNING.value]


class LeaseLost(Exception):
    """Another delivery took the job over; this one must stop writing."""


class JobRepository:
    def __init__(self, db: firestore.Client) -> None:
        self._db = db

    def _ref(self, job_id: str) -> firestore.DocumentReference:
        ref: firestore.DocumentReference = self._db.collection(JOBS).document(job_id)
        return ref

    def create(self, job: Job) -> None:
        self._ref(job.id).create(to_firestore(job), **grpc_call())

    def get(self, job_id: str) -> Job | None:
        return from_firestore(Job, self._ref(job_id).get(**grpc_call()).to_dict())

    def active_for_manifest(self, manifest_id: str) -> Job | None:
        q = (
            self._db.collection(JOBS)
            .where(filter=firestore.FieldFilter("manifest_id", "==", manifest_id))
            .where(filter=firestore.FieldFilter("status", "in", ACTIVE))
            .limit(1)
        )
        found = [Job.model_validate(s.to_dict()) for s in q.stream(**grpc_call())]
        return found[0] if found else None

    def latest_for_manifest(self, manifest_id: str) -> Job | None:
        found = self.recent_for_manifest(manifest_id, 1)
        return found[0] if found else None

    def recent_for_manifest(self, manifest_id: str, limit: int) -> list[Job]:
        """The manifest's latest jobs, newest first."""
        q = (
            self._db.collection(JOBS)
            .where(filter=firestore.FieldFilter("manifest_id", "==", manifest_id))
            .order_by("created_at", direction=firestore.Query.DESCENDING)
            .limit(limit)
        )
        return [Job.model_validate(s.to_dict()) for s in q.stream(**grpc_call())]

    def active(self, limit: int = 500) -> list[Job]:
        """Queued and running jobs, for the sweeper: few at any time, so one query."""
        q = self._db.collection(JOBS).where(filter=firestore.FieldFilter("status", "in", ACTIVE))
        return [Job.model_validate(s.to_dict()) for s in q.limit(limit).stream(**grpc_call())]

    def requeue(self, job: Job, *, failure: str | None = None) -> Job | None:
        """Counts one more requeue of a stuck job (or fails it, naming why): the caller that
        creates `jobs/{id}/requeues/{n}` wins, so concurrent sweepers count it once. None if
        another sweeper counted it already."""
        count, now = job.requeues + 1, utcnow()
        # The dead lease goes: until the requeued task takes the job, it is judged by
        # `updated_at`, so a sweep that reads it after this one does not count it again.
        fields: dict[str, Any] = {"requeues": count, "updated_at": now, "lease_until": None}
        if failure is not None:
            fields.update(status=JobStatus.FAILED.value, error=failure, finished_at=now)
        batch = self._db.batch()
        batch.create(self._ref(job.id).collection("requeues").document(f"{count:06d}"), {"at": now})
        batch.update(self._ref(job.id), fields)
        try:
            batch.commit(**grpc_call())
        except gexc.AlreadyExists:
            return None
        return job.model_copy(
            update={**fields, "status": JobStatus(fields.get("status", job.status))}
        )

    def acquire(self, job_id: str, lease_s: float) -> Job | None:
        """The job, leased to the caller, or None if it is finished, unknown, or leased to a
        live worker (the caller should let the task be retried later)."""
        job = self.get(job_id)
        if job is None or job.status.is_final:
            return None
        now = utcnow()
        if job.lease_until is not None and job.lease_until > now:
            return None
        attempt = job.attempts + 1
        lease_until = now + timedelta(seconds=lease_s)
        batch = self._db.batch()
        batch.create(
            self._ref(job_id).collection("attempts").document(f"{attempt:06d}"),
            {"at": now, "lease_until": lease_until},
        )
        fields: dict[str, Any] = {
            "attempts": attempt,
            "lease_until": lease_until,
            "status": JobStatus.RUNNING.value,
            "updated_at": now,
        }
        if job.started_at is None:
            fields["started_at"] = now
        batch.update(self._ref(job_id), fields)
        try:
            batch.commit(**grpc_call())
        except gexc.AlreadyExists:
            return None
        return job.model_copy(update={**fields, "status": JobStatus.RUNNING})

    def save(self, before: Job, after: Job, *, lease_s: float | None = None) -> Job:
        """Writes what changed (and renews the lease) if the caller still holds the job."""
        current = self.get(after.id)
        if current is None or current.attempts != after.attempts:
            raise LeaseLost(
                f"job {after.id} was taken over by attempt {current and current.attempts}"
            )
        after.updated_at = utcnow()
        if lease_s is not None:
            after.lease_until = after.updated_at + timedelta(seconds=lease_s)
        fields = changed_fields(before, after)
        if fields:
            self._ref(after.id).update(fields, **grpc_call())
        return after.model_copy(deep=True)
