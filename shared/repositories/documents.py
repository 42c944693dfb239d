"""Turning pydantic documents into Firestore values and back."""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from typing import Any, TypeVar

from google.cloud import firestore
from pydantic import BaseModel

from shared.deadlines import grpc_call

ModelT = TypeVar("ModelT", bound=BaseModel)


def to_firestore(model: BaseModel) -> dict[str, Any]:
    """Plain values Firestore stores natively: enums as their strings, datetimes kept as
    timestamps (so that they sort and compare in queries)."""
    converted = _plain(model.model_dump(mode="python"))
    assert isinstance(converted, dict)
    return converted


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {(k.value if isinstance(k, Enum) else k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def from_firestore(model: type[ModelT], data: dict[str, Any] | None) -> ModelT | None:
    return None if data is None else model.model_validate(data)


def changed_fields(before: BaseModel, after: BaseModel) -> dict[str, Any]:
    """Top-level fields whose stored value differs: what an update() must write."""
    old, new = to_firestore(before), to_firestore(after)
    return {key: value for key, value in new.items() if old.get(key) != value}


# Firestore allows 500 writes per batch.
BATCH_LIMIT = 500


def set_all(
    db: firestore.Client, models: Iterable[BaseModel], collection: firestore.CollectionReference
) -> None:
    """Writes documents (keyed by their `id`) in as few batches as Firestore allows. Not
    atomic past one batch: callers make the writes invisible until a final document exists."""
    docs = [(collection.document(m.id), to_firestore(m)) for m in models]  # type: ignore[attr-defined]
    for start in range(0, len(docs), BATCH_LIMIT):
        batch = db.batch()
        for ref, data in docs[start : start + BATCH_LIMIT]:
            batch.set(ref, data)
        batch.commit(**grpc_call())
