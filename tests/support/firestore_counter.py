"""Firestore documents read and written by this process, counted where the client sends them.

While `installed()` is active, the google-cloud-firestore client's entry points are wrapped in
this process (product code unchanged): `DocumentReference.get`, `Query.stream` (which
`Query.get` and `CollectionReference.stream/get` go through), `Client.get_all` and
`WriteBatch.commit` (which every document create/set/update/delete goes through). What they do
is added to the `FirestoreOps` of the innermost `counting()` block under way.

The RPCs the client sends are counted too: a path into Firestore that the wrappers miss (a
transaction, an aggregation, a listener) shows up as an RPC outside `COUNTED_RPCS`, and in
`rpc_mismatch()`.

Shared by tests/integration/test_firestore_ops_per_scene.py (an assertion) and
benchmarks/pipeline.py (a figure), so that both count the same way.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

COUNTED_RPCS = frozenset({"commit", "batch_get_documents", "run_query"})
"""The RPCs behind the calls counted: commits, lookups and batch gets, queries."""


@dataclass
class FirestoreOps:
    reads: int = 0
    """Documents read as Firestore bills them: each document a query returns (a query that
    returns none costs one), each document a lookup asks for, found or not."""
    writes: int = 0
    """Document writes (create, set, update, delete), each write of a batch counted."""
    lookups: int = 0
    """DocumentReference.get calls."""
    get_alls: int = 0
    queries: int = 0
    commits: int = 0
    write_bytes: int = 0
    """Serialized size of the writes: a checkpoint holds every scene, so its size grows."""
    largest_write: int = 0
    seconds: float = 0.0
    """Time spent inside the calls above."""
    rpcs: Counter[str] = field(default_factory=Counter)
    """RPCs the client sent, by method: the cross-check of the counts above."""
    paths: Counter[str] = field(default_factory=Counter)
    """'read projects/*/scenes/*' → documents: where the reads and writes go."""

    @property
    def calls(self) -> int:
        """Round trips: lookups, batch gets, queries and commits."""
        return self.lookups + self.get_alls + self.queries + self.commits

    def rpc_mismatch(self) -> str | None:
        """None when the RPCs sent are exactly the calls counted; otherwise both, in words.
        (The client retries a query that fails midway with a second RPC, which this reports
        too: the check is for a benchmark's quiet loopback, not for every network.)"""
        counted = {
            "commit": self.commits,
            "batch_get_documents": self.lookups + self.get_alls,
            "run_query": self.queries,
        }
        sent = {name: self.rpcs.get(name, 0) for name in counted}
        if sent == counted and set(self.rpcs) <= COUNTED_RPCS:
            return None
        return f"RPCs {dict(self.rpcs)} vs counted {counted}"


_current = FirestoreOps()
"""Where operations outside any `counting()` block go (and are forgotten)."""


@contextlib.contextmanager
def counting() -> Iterator[FirestoreOps]:
    """Counts what this process sends to Firestore inside the block (blocks nest: an inner
    block's operations count there only). One block at a time per process: the code counted
    must call Firestore from one thread at a time."""
    global _current
    previous, _current = _current, FirestoreOps()
    try:
        yield _current
    finally:
        _current = previous


def _pattern(path: str) -> str:
    """projects/abc/scenes/001 → projects/*/scenes/*: collections named, ids folded."""
    parts = path.split("/documents/", 1)[-1].split("/")
    return "/".join(p if i % 2 == 0 else "*" for i, p in enumerate(parts))


_RPCS = (
    "commit", "batch_get_documents", "run_query", "run_aggregation_query", "batch_write",
    "begin_transaction", "rollback", "list_documents", "get_document", "update_document",
    "delete_document", "create_document", "write", "listen", "partition_query",
    "list_collection_ids",
)  # fmt: skip


@contextlib.contextmanager
def installed() -> Iterator[None]:
    """Wraps the client's read and write entry points for the duration of the block."""
    from google.cloud.firestore_v1 import batch, client, document, query
    from google.cloud.firestore_v1.services.firestore import client as gapic

    def timed(ops: FirestoreOps, started: float) -> None:
        ops.seconds += time.perf_counter() - started

    original_get = document.DocumentReference.get

    def get(self: Any, *args: Any, **kwargs: Any) -> Any:
        ops, started = _current, time.perf_counter()
        try:
            return original_get(self, *args, **kwargs)
        finally:
            timed(ops, started)
            ops.lookups += 1
            ops.reads += 1  # a missing document is billed as a read too
            ops.paths[f"read {_pattern(self.path)}"] += 1

    original_stream = query.Query.stream

    def stream(self: Any, *args: Any, **kwargs: Any) -> Any:
        ops, started = _current, time.perf_counter()
        result = original_stream(self, *args, **kwargs)
        timed(ops, started)
        ops.queries += 1
        inner = result._generator  # StreamGenerator keeps its explain-metrics plumbing

        def counted() -> Generator[Any, None, Any]:
            returned = 0
            while True:
                started = time.perf_counter()
                try:
                    snapshot = next(inner)
                except StopIteration as stop:
                    timed(ops, started)
                    ops.reads += max(returned, 1)  # an empty answer is billed one read
                    if returned == 0:
                        where = "/".join(getattr(self._parent, "_path", ("?",)))
                        ops.paths[f"read (empty query) {_pattern(where)}"] += 1
                    return stop.value
                timed(ops, started)
                returned += 1
                ops.paths[f"read {_pattern(snapshot.reference.path)}"] += 1
                yield snapshot

        result._generator = counted()
        return result

    original_get_all = client.Client.get_all

    def get_all(self: Any, references: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        ops = _current
        ops.get_alls += 1
        inner = original_get_all(self, references, *args, **kwargs)
        while True:
            started = time.perf_counter()
            try:
                snapshot = next(inner)
            except StopIteration:
                timed(ops, started)
                return
            timed(ops, started)
            ops.reads += 1
            ops.paths[f"read {_pattern(snapshot.reference.path)}"] += 1
            yield snapshot

    original_commit = batch.WriteBatch.commit

    def commit(self: Any, *args: Any, **kwargs: Any) -> Any:
        ops, started = _current, time.perf_counter()
        writes = list(self._write_pbs)
        try:
            return original_commit(self, *args, **kwargs)
        finally:
            timed(ops, started)
            ops.commits += 1
            ops.writes += len(writes)
            for pb in writes:
                raw = type(pb).pb(pb)
                size = raw.ByteSize()
                ops.write_bytes += size
                ops.largest_write = max(ops.largest_write, size)
                name = raw.update.name or raw.delete or raw.transform.document
                ops.paths[f"write {_pattern(name)}"] += 1

    def rpc_counter(name: str, method: Any) -> Any:
        def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
            _current.rpcs[name] += 1
            return method(self, *args, **kwargs)

        return counted

    patches = [
        (document.DocumentReference, "get", get),
        (query.Query, "stream", stream),
        (client.Client, "get_all", get_all),
        (batch.WriteBatch, "commit", commit),
        *(
            (gapic.FirestoreClient, name, rpc_counter(name, getattr(gapic.FirestoreClient, name)))
            for name in _RPCS
            if hasattr(gapic.FirestoreClient, name)
        ),
    ]
    # What each class defines itself (None: inherited), so that undoing restores exactly that.
    saved = [(owner, name, owner.__dict__.get(name)) for owner, name, _ in patches]
    try:
        for owner, name, wrapper in patches:
            setattr(owner, name, wrapper)
        yield
    finally:
        for owner, name, original in reversed(saved):
            if original is None:
                delattr(owner, name)
            else:
                setattr(owner, name, original)
