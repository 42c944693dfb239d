"""Face grouping time and peak memory for 1k, 10k and 50k embeddings, against naive baselines.

    .venv/bin/python benchmarks/face_grouping.py            # 1k, 10k, 50k: about two minutes
    .venv/bin/python benchmarks/face_grouping.py --quick    # 1k and 10k

Embeddings are 512-d like ArcFace's: people as random unit centres, about 20 faces each,
every face its centre plus noise (same-person similarity about 0.6, different people about
0), one face in a hundred drawn towards a second person so that review pairs occur, and
ten cannot-link pairs. Grouping runs at threshold 0.5 with a 0.1 review margin.

Measured in the same run, on the same data:
- blocked: shared.manifesting.face_groups.group_faces (row blocks, vectorised union-find);
- full matrix: the whole N x N similarity matrix at once, its pairs above the threshold
  joined by a Python union-find (no cannot-links), where the matrix fits in memory;
- per pair: a Python loop over every pair (one numpy dot product each) and the same
  union-find, on 1k faces only.
Time is the best of a few runs (the machine is shared), with that run's CPU time over all
threads; peak memory is tracemalloc's peak of a separate run (numpy reports its buffers to
it), so tracing never slows the timed runs.
Prints a table and writes benchmarks/reports/face_grouping.md (`--out DIR` elsewhere).
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import platform
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import numpy as np
from common import CORES, arguments, markdown_table, write_atomically

from shared.manifesting.face_groups import group_faces

T = TypeVar("T")
DIM = 512
THRESHOLD = 0.5
MARGIN = 0.1
FACES_PER_PERSON = 20
FULL_MATRIX_LIMIT = 20_000
"""Above this the N x N float32 matrix alone takes more than 1.6 GB (50k: 10 GB)."""


def clustered(count: int, seed: int = 0) -> tuple[np.ndarray, list[tuple[int, int]]]:
    rng = np.random.default_rng(seed)
    people = max(1, count // FACES_PER_PERSON)
    centres = rng.standard_normal((people, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    person = rng.integers(0, people, count)
    vectors = centres[person] + rng.standard_normal((count, DIM)).astype(np.float32) * (
        0.8 / np.sqrt(DIM)
    )
    # One face in a hundred also looks like someone else (about 0.42 alike to that person's
    # faces, 0.63 to its own): the doubtful pairs a review is for.
    mixed = rng.choice(count, count // 100, replace=False)
    other = rng.integers(0, people, len(mixed))
    vectors[mixed] = 0.6 * centres[person[mixed]] + 0.4 * centres[other] + vectors[mixed] * 0.2
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    cannot = [(int(a), int(b)) for a, b in rng.choice(count, (10, 2), replace=False)]
    return vectors, cannot


class UnionFind:
    def __init__(self, count: int) -> None:
        self.parent = list(range(count))

    def find(self, node: int) -> int:
        parent = self.parent
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    def union(self, a: int, b: int) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            self.parent[max(root_a, root_b)] = min(root_a, root_b)

    def labels(self) -> list[int]:
        return [self.find(i) for i in range(len(self.parent))]


def full_matrix(vectors: np.ndarray) -> list[int]:
    similarity = vectors @ vectors.T
    rows, cols = np.nonzero(np.triu(similarity >= THRESHOLD, k=1))
    groups = UnionFind(len(vectors))
    for a, b in zip(rows.tolist(), cols.tolist(), strict=True):
        groups.union(a, b)
    return groups.labels()


def per_pair(vectors: np.ndarray) -> list[int]:
    groups = UnionFind(len(vectors))
    rows = list(vectors)
    for i in range(len(rows)):
        for j in range(i):
            if float(np.dot(rows[i], rows[j])) >= THRESHOLD:
                groups.union(i, j)
    return groups.labels()


def same(labels: list[int], plain: list[int]) -> str:
    """Whether a baseline found the groups group_faces finds without cannot-links."""
    return "same groups as group_faces" if canonical(labels) == plain else "DIFFERENT groups"


def canonical(labels: list[int] | np.ndarray) -> list[int]:
    seen: dict[int, int] = {}
    return [seen.setdefault(int(label), len(seen)) for label in labels]


@dataclass
class Row:
    size: int
    method: str
    seconds: float
    cpu_seconds: float
    peak_mib: float
    groups: int
    note: str = ""


def measure(run: Callable[[], T], repeats: int) -> tuple[float, float, float, T]:
    """Best wall time, the CPU time of that run (all threads: the machine is shared, and
    CPU time says how much work was done whatever else ran), tracemalloc's peak in MiB."""
    best, cpu = float("inf"), float("inf")
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = run()
        wall = time.perf_counter() - start
        if wall < best:
            best, cpu = wall, time.process_time() - start_cpu
    tracemalloc.start()
    run()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return best, cpu, peak / 2**20, result


def baseline(
    method: str, grouping: Callable[[np.ndarray], list[int]], vectors: np.ndarray,
    plain: list[int], repeats: int,
) -> Row:  # fmt: skip
    """A naive grouping of the same vectors, measured as group_faces is, its groups compared."""
    seconds, cpu, peak, labels = measure(partial(grouping, vectors), repeats)
    return Row(len(vectors), method, seconds, cpu, peak, len(set(labels)), same(labels, plain))


def main() -> None:
    args = arguments(__doc__, "1k and 10k only")
    start_load = os.getloadavg()[0]
    sizes = [1_000, 10_000] if args.quick else [1_000, 10_000, 50_000]
    rows: list[Row] = []
    for size in sizes:
        vectors, cannot = clustered(size)
        repeats = 3 if size <= 10_000 else 1
        run = partial(
            group_faces, vectors, threshold=THRESHOLD, ambiguous_margin=MARGIN, cannot_link=cannot
        )
        seconds, cpu, peak, result = measure(run, repeats)
        groups, review = len(set(result.labels.tolist())), len(result.ambiguous)
        rows.append(Row(size, "blocked (group_faces)", seconds, cpu, peak, groups,
                        f"{review} pairs for review, 10 cannot-links"))  # fmt: skip
        plain = canonical(group_faces(vectors, threshold=THRESHOLD).labels)
        if size <= FULL_MATRIX_LIMIT:
            rows.append(baseline("full N x N matrix", full_matrix, vectors, plain, repeats))
        else:
            matrix_mib = size * size * 4 / 2**20
            rows.append(Row(size, "full N x N matrix", float("nan"), float("nan"), matrix_mib, 0,
                            "not run: the matrix alone would take this much"))  # fmt: skip
        if size <= 1_000:
            rows.append(baseline("per-pair Python loop", per_pair, vectors, plain, 1))
        print(f"{size:>6} faces done", flush=True)

    report = render(rows, start_load)
    print(report)
    write_atomically(args.out / "face_grouping.md", report)
    print(f"written to {args.out / 'face_grouping.md'}")


def render(rows: list[Row], start_load: float) -> str:
    lines = [
        "# Face grouping: time and memory",
        "",
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
        f"{CORES} cores, load average {start_load:.1f} at the start and "
        f"{os.getloadavg()[0]:.1f} at the end (a shared machine: wall times vary with it), "
        f"numpy {np.__version__}. {DIM}-d embeddings, about {FACES_PER_PERSON} per person, "
        f"threshold {THRESHOLD}, review margin {MARGIN}. Command: "
        "`.venv/bin/python benchmarks/face_grouping.py`.",
        "",
    ]

    def seconds(value: float) -> str:
        return "—" if np.isnan(value) else f"{value:.3f}"

    headers = ["faces", "method", "time (s)", "CPU time (s)", "peak memory (MiB)", "groups", "note"]
    cells = [
        [f"{r.size:,}", r.method, seconds(r.seconds), seconds(r.cpu_seconds),
         f"{r.peak_mib:,.1f}", str(r.groups) if r.groups else "—", r.note]
        for r in rows
    ]  # fmt: skip
    lines.append(markdown_table(headers, cells, right=(0, 2, 3, 4, 5)))
    blocked = {r.size: r for r in rows if r.method.startswith("blocked")}
    sizes = sorted(blocked)
    growth = [
        f"{a:,} → {b:,} faces ({b // a}x): time x{blocked[b].seconds / blocked[a].seconds:.1f}, "
        f"CPU time x{blocked[b].cpu_seconds / blocked[a].cpu_seconds:.1f}, "
        f"memory x{blocked[b].peak_mib / blocked[a].peak_mib:.1f}"
        for a, b in itertools.pairwise(sizes)
    ]
    lines += ["", "Growth of group_faces:", ""] + [f"- {line}" for line in growth]
    against = [
        f"{r.size:,} faces, {r.method}: group_faces is {r.seconds / blocked[r.size].seconds:.1f}x "
        f"faster and needs {r.peak_mib / max(blocked[r.size].peak_mib, 1e-9):.1f}x less memory"
        if r.method.startswith("full")
        else f"{r.size:,} faces, {r.method}: group_faces is "
        f"{r.seconds / blocked[r.size].seconds:.0f}x faster"
        for r in rows
        if not r.method.startswith("blocked") and not np.isnan(r.seconds)
    ]
    lines += ["", "Against the baselines (same run, same data):", ""]
    lines += [f"- {line}" for line in against]
    lines += [
        "",
        "Time grows with the number of pairs, N² (every pair's similarity is computed once, "
        "as matrix products of row blocks). Memory grows with N: the embeddings, one row block "
        "of similarities (at most 32 MiB) and the pairs kept above the review band, which "
        "for clustered faces grow with N too; the N x N matrix is never held.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
