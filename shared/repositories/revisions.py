"""Revision claims: optimistic concurrency that holds on Cloud Firestore and on emulators
whose transactions do not lock.

A guarded document carries a `revision` number. A writer reads it, plans its change, and
commits one batch whose first write *creates* `<document>/revisions/<n+1>`. Two writers that
read the same revision race to create the same claim; Firestore lets exactly one win, and the
loser re-reads and re-plans. Every other write of the batch lands with the claim or not at
all. The claim carries a token, so a writer whose commit answer was lost (a resend, a dropped
connection) recognises its own landed write instead of planning it again.
"""

from __future__ import annotations

import random
import time
from datetime import timedelta
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from shared.deadlines import grpc_call
from shared.models.common import utcnow

REVISIONS = "revisions"
REVISION_RETENTION = timedelta(days=7)
"""Claims exist to serialise writers; a TTL policy on expire_at removes them later."""
UNCERTAIN_COMMIT = (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.InternalServerError)
"""Commit errors after which the batch may or may not have been applied."""


def revision_ref(ref: firestore.DocumentReference, revision: int) -> firestore.DocumentReference:
    claim: firestore.DocumentReference = ref.collection(REVISIONS).document(f"{revision:012d}")
    return claim


def revision_doc(summary: str, token: str = "") -> dict[str, Any]:
    now = utcnow()
    return {"at": now, "summary": summary, "token": token, "expire_at": now + REVISION_RETENTION}


def claimed_by(ref: firestore.DocumentReference, revision: int, token: str) -> bool:
    claim = revision_ref(ref, revision).get(**grpc_call())
    return bool(claim.exists and (claim.to_dict() or {}).get("token") == token)


def back_off(attempt: int) -> None:
    time.sleep(random.uniform(0, min(0.25, 0.005 * 2**attempt)))


def lost_race(
    error: Exception, ref: firestore.DocumentReference, revision: int, token: str,
    *, last_attempt: bool,
) -> bool:  # fmt: skip
    """After a failed commit: False if the batch landed after all (our own claim), True if
    another writer took the revision (re-plan); re-raises an uncertain error on the last try."""
    if claimed_by(ref, revision, token):
        return False
    if not isinstance(error, gexc.AlreadyExists) and last_attempt:
        raise error
    return True
