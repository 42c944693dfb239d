"""Throughput, latency and cold starts of the Framefork functions, against the local stack.

    .venv/bin/python benchmarks/api.py            # full run, a few minutes
    .venv/bin/python benchmarks/api.py --quick    # smoke run, under a minute

Starts its own LocalStack under .local/bench (emulators, both functions as real
functions-framework processes, the event bridge), drives the `api` function over HTTP from
client threads, and stops the stack at the end. Prints a table and writes
benchmarks/reports/api.md and benchmarks/reports/api.json (`--out DIR` elsewhere). See
benchmarks/README.md.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import requests
from common import (
    CORES,
    ROOT,
    CpuWindow,
    arguments,
    child_env,
    json_safe,
    machine,
    markdown_table,
    own_stack,
    spawned,
    text_table,
    write_atomically,
    write_json,
)

from infra.local.stack import LocalStack, StackSettings, free_port

STATE_DIR = ROOT / ".local" / "bench"
UPLOAD_LAYOUT_OUTSIDE = "bench/not-an-asset-upload.bin"


# ---------------------------------------------------------------------------------------------
# Settings of a run


@dataclass(frozen=True)
class Profile:
    concurrency: tuple[int, ...]
    repeats: int
    requests_per_measurement: int
    """Target requests per measurement, split over the clients (each does at least
    min_per_client): the same amount of work at every concurrency, so one run's length does
    not grow with the number of clients."""
    min_per_client: int
    max_seconds: float
    """Clients stop starting requests after this long, whatever the count."""
    warmup_per_client: int
    list_manifests: int
    read_assets: int
    spawns: int
    imports: int
    scaling_extra_manifests: int
    scaling_probes: int


FULL = Profile(
    concurrency=(1, 8, 32),
    repeats=3,
    requests_per_measurement=400,
    min_per_client=8,
    max_seconds=6.0,
    warmup_per_client=2,
    list_manifests=200,
    read_assets=10,
    spawns=5,
    imports=5,
    scaling_extra_manifests=2000,
    scaling_probes=40,
)
QUICK = replace(
    FULL, repeats=1, requests_per_measurement=60, min_per_client=2, max_seconds=1.0,
    warmup_per_client=1, spawns=1, imports=1, scaling_extra_manifests=300, scaling_probes=20,
)  # fmt: skip

# The operations, in the order each round runs them. The baseline comes first so that it is
# measured beside the others in every round, under the same machine noise.
OPERATIONS = (
    ("healthz", "GET /healthz (baseline: framework + HTTP, no Firestore)"),
    ("get", "GET /manifests/{id} (manifest + 10 assets)"),
    ("list", "GET /manifests?limit=20 (200 manifests)"),
    ("create", "POST /manifests"),
    ("asset_spread", "POST /manifests/{id}/assets, each client its own manifest"),
    ("asset_same", "POST /manifests/{id}/assets, every client on one manifest"),
)


# ---------------------------------------------------------------------------------------------
# Load


@dataclass
class Request:
    method: str
    path: str
    body: dict[str, Any] | None = None


@dataclass
class Sample:
    """One measurement: one operation, one concurrency, one repeat."""

    operation: str
    concurrency: int
    repeat: int
    requests: int
    ok: int
    errors: int
    statuses: dict[str, int]
    wall_s: float
    rps: float
    """Successful answers per second of wall time."""
    p50_ms: float
    p99_ms: float
    max_ms: float
    cpu_ms_per_ok: dict[str, float]
    cpu_busy: float
    """CPU used by client, api and Firestore during the measurement, as a share of all cores."""
    cpu_others: float
    """CPU used by everything else on the machine (other emulators, other users), same scale."""
    steal: float
    """Time the hypervisor gave the cores to other machines, same scale."""
    hit_time_cap: bool
    started_at: float
    """Unix time, to line measurements up with the logs."""
    ended_at: float
    error_examples: dict[str, str]
    """The first answer body per non-2xx status, shortened."""


@dataclass
class Load:
    latencies: list[float]
    """Seconds, one per answer (errors included)."""
    statuses: Counter[str]
    """HTTP status, or the exception's name when no answer came."""
    wall_s: float
    capped: bool
    """Whether the time cap cut the run short of its count."""
    error_examples: dict[str, str]


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest rank: an observed value, never an interpolation between two."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


class Clients:
    """Client threads, each with its own requests.Session (its own keep-alive connection)."""

    def __init__(self, base_url: str, count: int, uid: str | None) -> None:
        self.base_url = base_url
        self.sessions = [requests.Session() for _ in range(count)]
        if uid is not None:
            for session in self.sessions:
                session.headers["Authorization"] = f"Bearer dev:{uid}"

    def close(self) -> None:
        for session in self.sessions:
            session.close()

    def run(
        self,
        make: Callable[[int, int], Request],
        per_client: int,
        max_seconds: float,
    ) -> Load:
        """Each client i sends make(i, n) for n < per_client, stopping early at max_seconds."""
        count = len(self.sessions)
        latencies: list[list[float]] = [[] for _ in range(count)]
        statuses: list[Counter[str]] = [Counter() for _ in range(count)]
        examples: dict[str, str] = {}
        capped = [False] * count
        barrier = threading.Barrier(count + 1)
        bounds: list[tuple[float, float]] = [(0.0, 0.0)] * count

        def client(i: int) -> None:
            session = self.sessions[i]
            barrier.wait()
            start = time.perf_counter()
            deadline = start + max_seconds
            for n in range(per_client):
                if time.perf_counter() >= deadline:
                    capped[i] = True
                    break
                request = make(i, n)
                began = time.perf_counter()
                try:
                    reply = session.request(
                        request.method,
                        self.base_url + request.path,
                        json=request.body,
                        timeout=30,
                    )
                    reply.content  # noqa: B018 - the body is part of the answer's latency
                    status = str(reply.status_code)
                    detail = reply.text
                except requests.RequestException as error:
                    status = type(error).__name__
                    detail = str(error)
                latencies[i].append(time.perf_counter() - began)
                statuses[i][status] += 1
                if not _ok(status):
                    examples.setdefault(status, detail[:300])
            bounds[i] = (start, time.perf_counter())

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(count)]
        for thread in threads:
            thread.start()
        barrier.wait()
        for thread in threads:
            thread.join()
        wall = max(b[1] for b in bounds) - min(b[0] for b in bounds)
        merged: Counter[str] = Counter()
        for counter in statuses:
            merged.update(counter)
        return Load([x for per in latencies for x in per], merged, wall, any(capped), examples)


def _ok(status: str) -> bool:
    return status.isdigit() and 200 <= int(status) < 300


def measure(
    clients: Clients,
    operation: str,
    make: Callable[[int, int], Request],
    concurrency: int,
    repeat: int,
    profile: Profile,
    groups: dict[str, int],
) -> Sample:
    per_client = max(profile.min_per_client, profile.requests_per_measurement // concurrency)
    started_at = time.time()
    with CpuWindow(groups) as cpu:
        load = clients.run(make, per_client, profile.max_seconds)
    ended_at = time.time()
    wall = load.wall_s
    ok = sum(n for s, n in load.statuses.items() if _ok(s))
    total = sum(load.statuses.values())
    ordered = sorted(load.latencies)
    used = {**cpu.use.groups_s, "client": cpu.use.own_s}
    ours = sum(used.values()) / (wall * CORES) if wall > 0 else math.nan
    return Sample(
        operation=operation,
        concurrency=concurrency,
        repeat=repeat,
        requests=total,
        ok=ok,
        errors=total - ok,
        statuses=dict(sorted(load.statuses.items())),
        wall_s=wall,
        rps=ok / wall if wall > 0 else math.nan,
        p50_ms=percentile(ordered, 0.50) * 1000,
        p99_ms=percentile(ordered, 0.99) * 1000,
        max_ms=(ordered[-1] if ordered else math.nan) * 1000,
        cpu_ms_per_ok={k: (v * 1000 / ok if ok else math.nan) for k, v in used.items()},
        cpu_busy=ours,
        # Ticks cover the window, a little longer than `wall`: clamp, never negative.
        cpu_others=max(0.0, cpu.use.busy_share - ours),
        steal=cpu.use.steal_share,
        hit_time_cap=load.capped,
        started_at=started_at,
        ended_at=ended_at,
        error_examples=load.error_examples,
    )


# ---------------------------------------------------------------------------------------------
# The data the operations read and write


class Api:
    """Plain calls for seeding and checks; failures stop the run, they are not measurements."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.session = requests.Session()

    def call(self, method: str, path: str, uid: str, body: Any = None, expect: int = 200) -> Any:
        reply = self.session.request(
            method,
            self.base_url + path,
            json=body,
            headers={"Authorization": f"Bearer dev:{uid}"},
            timeout=30,
        )
        if reply.status_code != expect:
            raise RuntimeError(f"{method} {path} answered {reply.status_code}: {reply.text[:300]}")
        return reply.json() if reply.content else None

    def manifest(self, uid: str, name: str) -> str:
        return str(self.call("POST", "/manifests", uid, {"name": name}, 201)["id"])

    def asset(self, uid: str, manifest_id: str, name: str) -> dict[str, Any]:
        body = {"asset_type": "CHARACTER", "name": name}
        result: dict[str, Any] = self.call(
            "POST", f"/manifests/{manifest_id}/assets", uid, body, 201
        )
        return result


# Each operation acts as its own user, so that writes never change what reads see (a
# create run would otherwise grow the list user's 200 manifests).
UID_READ = "bench-read"
UID_LIST = "bench-list"
UID_CREATE = "bench-create"
UID_ASSETS = "bench-assets"


@dataclass
class Fixtures:
    read_manifest: str
    spread_manifests: list[str]
    """One per client, so that spread asset writes never race each other."""


def seed(api: Api, profile: Profile) -> Fixtures:
    read_manifest = api.manifest(UID_READ, "bench read")
    for n in range(profile.read_assets):
        api.asset(UID_READ, read_manifest, f"asset {n}")
    # Seeded in parallel: 200 sequential creates would take a noticeable share of a run.
    seeder = Clients(api.base_url, 8, UID_LIST)
    try:
        per_client = math.ceil(profile.list_manifests / 8)
        statuses = seeder.run(
            lambda i, n: Request("POST", "/manifests", {"name": f"bench list {i}-{n}"}),
            per_client,
            120.0,
        ).statuses
    finally:
        seeder.close()
    if set(statuses) != {"201"}:
        raise RuntimeError(f"seeding the list user answered {dict(statuses)}")
    listed = api.call("GET", "/manifests?limit=100", UID_LIST)
    if len(listed["items"]) < min(100, profile.list_manifests):
        raise RuntimeError("the list user's manifests are not all listed")
    spread = [
        api.manifest(UID_ASSETS, f"bench spread {i}") for i in range(max(profile.concurrency))
    ]
    return Fixtures(read_manifest=read_manifest, spread_manifests=spread)


def operation_uids() -> dict[str, str | None]:
    """The user each operation acts as (None: no Authorization header)."""
    return {
        "healthz": None,
        "get": UID_READ,
        "list": UID_LIST,
        "create": UID_CREATE,
        "asset_spread": UID_ASSETS,
        "asset_same": UID_ASSETS,
    }


def operation_requests(fixtures: Fixtures) -> dict[str, Callable[[int, int, str], Request]]:
    """Per operation: make(client, n, hot_manifest) -> the request to send."""
    return {
        "healthz": lambda i, n, hot: Request("GET", "/healthz"),
        "get": lambda i, n, hot: Request("GET", f"/manifests/{fixtures.read_manifest}"),
        "list": lambda i, n, hot: Request("GET", "/manifests?limit=20"),
        "create": lambda i, n, hot: Request(
            "POST", "/manifests", {"name": f"bench create {i}-{n}"}
        ),
        "asset_spread": lambda i, n, hot: Request(
            "POST",
            f"/manifests/{fixtures.spread_manifests[i]}/assets",
            {"asset_type": "CHARACTER", "name": f"spread {i}-{n}"},
        ),
        "asset_same": lambda i, n, hot: Request(
            "POST",
            f"/manifests/{hot}/assets",
            {"asset_type": "CHARACTER", "name": f"same {i}-{n}"},
        ),
    }


def bind_hot(make: Callable[[int, int, str], Request], hot: str) -> Callable[[int, int], Request]:
    return lambda i, n: make(i, n, hot)


def check_manifest(api: Api, manifest_id: str, answered_201: int | None) -> list[str]:
    """The invariants the revision claim exists to keep, for a manifest that has only ever had
    assets added: asset_count equals the assets stored, tags are unique and gapless, and the
    version grew by one per asset. With answered_201, also that every stored asset was
    answered 201 (no write reported failed that in fact happened)."""
    detail = api.call("GET", f"/manifests/{manifest_id}", UID_ASSETS)
    manifest, assets = detail["manifest"], detail["assets"]
    stored = len(assets)
    tags = [a["manifest_tag"] for a in assets]
    numbers = sorted(int(t.rsplit("_", 1)[1]) for t in tags)
    problems = []
    if manifest["asset_count"] != stored:
        problems.append(f"asset_count {manifest['asset_count']} but {stored} assets stored")
    if manifest["version"] != stored + 1:
        problems.append(f"version {manifest['version']} after {stored} asset writes")
    if len(set(tags)) != len(tags):
        problems.append("duplicate tags")
    elif numbers != list(range(1, stored + 1)):
        highest = numbers[-1] if numbers else 0
        problems.append(f"tags skip numbers ({stored} assets, highest tag {highest})")
    if answered_201 is not None and stored != answered_201:
        problems.append(f"{stored} assets stored but {answered_201} writes answered 201")
    return [f"manifest {manifest_id}: {p}" for p in problems]


# ---------------------------------------------------------------------------------------------
# Cold starts


def _wait_for(
    child: subprocess.Popen[bytes], attempt: Callable[[], bool], t0: float, what: str
) -> float:
    """Seconds from t0 until attempt() first succeeds. Polls every 5 ms: finer than any
    difference worth reporting, coarse enough not to steal a core from the starting process."""
    deadline = t0 + 60
    while True:
        if attempt():
            return time.perf_counter() - t0
        if child.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {child.returncode}")
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{what}: no answer within 60 s")
        time.sleep(0.005)


def _answers(session: requests.Session, method: str, url: str, **kwargs: Any) -> Callable[[], bool]:
    def attempt() -> bool:
        try:
            reply = session.request(method, url, timeout=30, **kwargs)
        except requests.ConnectionError:
            return False  # not listening yet
        if reply.status_code >= 300:
            raise RuntimeError(f"{method} {url} answered {reply.status_code}: {reply.text[:300]}")
        return True

    return attempt


def function_argv(stack: LocalStack, target: str, port: int) -> list[str]:
    return [str(ROOT / ".venv" / "bin" / "functions-framework"), "--source",
            str(stack.functions_source), "--target", target, "--host", "127.0.0.1",
            "--port", str(port)]  # fmt: skip


def cold_start_api(stack: LocalStack, log: Path, env: dict[str, str]) -> dict[str, float]:
    port = free_port(set(stack.ports.values()))
    base = f"http://127.0.0.1:{port}"
    # A fresh session each spawn: no connection may survive from the previous process.
    with requests.Session() as session:
        t0 = time.perf_counter()
        with spawned(function_argv(stack, "api", port), env, log) as child:
            healthz = _wait_for(child, _answers(session, "GET", f"{base}/healthz"), t0, "api")
            # The first Firestore answer also builds the Firestore client and its channel.
            auth = {"Authorization": f"Bearer dev:{UID_LIST}"}
            listed = _answers(session, "GET", f"{base}/manifests?limit=20", headers=auth)
            first = _wait_for(child, listed, t0, "api")
    return {"healthz_s": healthz, "first_real_s": first}


def cold_start_on_upload(stack: LocalStack, log: Path, env: dict[str, str]) -> dict[str, float]:
    port = free_port(set(stack.ports.values()))
    url = f"http://127.0.0.1:{port}/"
    resource_ = {
        "bucket": stack.upload_bucket,
        "name": UPLOAD_LAYOUT_OUTSIDE,
        "generation": "1",
        "size": "3",
        "kind": "storage#object",
    }
    headers = {
        "ce-id": "bench-cold-start",
        "ce-specversion": "1.0",
        "ce-type": "google.cloud.storage.object.v1.finalized",
        "ce-source": f"//storage.googleapis.com/projects/_/buckets/{stack.upload_bucket}",
        "ce-subject": f"objects/{UPLOAD_LAYOUT_OUTSIDE}",
        "ce-time": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
    }
    with requests.Session() as session:
        t0 = time.perf_counter()
        argv = function_argv(stack, "on_upload", port)
        with spawned(argv, env, log) as child:
            event = _answers(session, "POST", url, json=resource_, headers=headers)
            acked = _wait_for(child, event, t0, "on_upload")
    return {"event_acked_s": acked}


_IMPORT_PROBE = (
    "import time; t = time.perf_counter(); import functions.main; print(time.perf_counter() - t)"
)


def import_time(env: dict[str, str]) -> dict[str, float]:
    python = str(ROOT / ".venv" / "bin" / "python")
    t0 = time.perf_counter()
    out = subprocess.run(
        [python, "-c", _IMPORT_PROBE], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    total = time.perf_counter() - t0
    return {"import_s": float(out.stdout.strip().splitlines()[-1]), "interpreter_total_s": total}


_IMPORTTIME_LINE = re.compile(r"import time:\s+(\d+) \|\s+\d+ \|\s+(\S+)")


def heaviest_imports(stack: LocalStack, top: int = 8) -> list[dict[str, Any]]:
    """Packages by the import time of their own modules (self time, summed), from one
    `python -X importtime` run: cumulative times would charge a package with everything it
    happens to import first."""
    python = str(ROOT / ".venv" / "bin" / "python")
    out = subprocess.run(
        [python, "-X", "importtime", "-c", "import functions.main"],
        cwd=ROOT,
        env=child_env(stack),
        capture_output=True,
        text=True,
        check=True,
    )
    packages: Counter[str] = Counter()
    for line in out.stderr.splitlines():
        match = _IMPORTTIME_LINE.match(line)
        if match:
            parts = match[2].split(".")
            # google.* is a namespace over unrelated distributions; name the one below it.
            package = ".".join(parts[:2]) if parts[0] == "google" else parts[0]
            packages[package] += int(match[1])
    return [{"package": k, "self_ms": v / 1000} for k, v in packages.most_common(top)]


BYTECODE_MODES = ("with bytecode caches", "without bytecode caches")
"""A deployment may ship compiled bytecode; these machines set PYTHONDONTWRITEBYTECODE=1, so a
process here compiles every import unless caches exist. Both are measured, each with a cache
folder of its own (PYTHONPYCACHEPREFIX), so neither depends on what earlier runs left."""


def bytecode_env(stack: LocalStack, mode: str, folder: Path) -> dict[str, str]:
    """The stack's environment with the bytecode of `mode`: caches written once into `folder`
    beforehand, or an empty `folder` that nothing is written to."""
    env = child_env(stack, {"PYTHONPYCACHEPREFIX": str(folder), "PYTHONDONTWRITEBYTECODE": "1"})
    if mode == BYTECODE_MODES[0]:
        python = str(ROOT / ".venv" / "bin" / "python")
        subprocess.run([python, "-c", "import functions.main"], cwd=ROOT, check=True,
                       env={**env, "PYTHONDONTWRITEBYTECODE": ""})  # fmt: skip
    return env


def cold_starts(stack: LocalStack, profile: Profile) -> dict[str, Any]:
    logs = stack.logs_dir / "cold-start"
    found: dict[str, Any] = {}
    for mode in BYTECODE_MODES:
        with tempfile.TemporaryDirectory(prefix="pycache-") as folder:
            env = bytecode_env(stack, mode, Path(folder))
            # Interleaved, not five of one then five of the next, so that a burst of load from
            # a neighbour falls on one run of each rather than on every run of one.
            api_runs, upload_runs, import_runs = [], [], []
            for n in range(max(profile.spawns, profile.imports)):
                if n < profile.spawns:
                    api_runs.append(cold_start_api(stack, logs / f"api-{n}.log", env))
                    upload_runs.append(
                        cold_start_on_upload(stack, logs / f"on_upload-{n}.log", env)
                    )
                if n < profile.imports:
                    import_runs.append(import_time(env))
        found[mode] = {
            "api": _summary(api_runs),
            "on_upload": _summary(upload_runs),
            "import_functions_main": _summary(import_runs),
        }
    return {"modes": found, "heaviest_imports": heaviest_imports(stack)}


def _summary(runs: list[dict[str, float]]) -> dict[str, Any]:
    return {
        key: {
            "median_s": statistics.median(r[key] for r in runs),
            "min_s": min(r[key] for r in runs),
            "max_s": max(r[key] for r in runs),
            "runs_s": [r[key] for r in runs],
        }
        for key in runs[0]
    }


# ---------------------------------------------------------------------------------------------
# The run


def aggregate(samples: list[Sample]) -> dict[str, dict[int, dict[str, Any]]]:
    """Medians across repeats, per operation and concurrency."""
    table: dict[str, dict[int, dict[str, Any]]] = {}
    for op, _ in OPERATIONS:
        for c in sorted({s.concurrency for s in samples}):
            runs = [s for s in samples if s.operation == op and s.concurrency == c]
            if not runs:
                continue
            statuses: Counter[str] = Counter()
            for s in runs:
                statuses.update(s.statuses)
            table.setdefault(op, {})[c] = {
                "rps": statistics.median(s.rps for s in runs),
                "rps_min": min(s.rps for s in runs),
                "rps_max": max(s.rps for s in runs),
                "p50_ms": statistics.median(s.p50_ms for s in runs),
                "p99_ms": statistics.median(s.p99_ms for s in runs),
                "max_ms": max(s.max_ms for s in runs),
                "requests": sum(s.requests for s in runs),
                "errors": sum(s.errors for s in runs),
                "statuses": dict(sorted(statuses.items())),
                "cpu_ms_per_ok": {
                    k: statistics.median(s.cpu_ms_per_ok[k] for s in runs)
                    for k in runs[0].cpu_ms_per_ok
                },
                "cpu_busy": statistics.median(s.cpu_busy for s in runs),
                "cpu_others": statistics.median(s.cpu_others for s in runs),
                "cpu_others_max": max(s.cpu_others for s in runs),
                "steal": statistics.median(s.steal for s in runs),
                "error_examples": {k: v for s in runs for k, v in s.error_examples.items()},
                "hit_time_cap": sum(s.hit_time_cap for s in runs),
                "repeats": len(runs),
            }
    return table


def ratios(table: dict[str, dict[int, dict[str, Any]]]) -> dict[str, Any]:
    base = table["healthz"]
    out: dict[str, Any] = {"vs_healthz": {}, "same_vs_spread": {}}
    for op, per_c in table.items():
        if op == "healthz":
            continue
        out["vs_healthz"][op] = {
            c: {
                "p50": row["p50_ms"] / base[c]["p50_ms"],
                "p99": row["p99_ms"] / base[c]["p99_ms"],
                "rps": base[c]["rps"] / row["rps"] if row["rps"] else math.inf,
            }
            for c, row in per_c.items()
        }
    for c, same in table.get("asset_same", {}).items():
        spread = table["asset_spread"][c]
        cpu_same = same["cpu_ms_per_ok"]
        cpu_spread = spread["cpu_ms_per_ok"]
        out["same_vs_spread"][c] = {
            "rps": same["rps"] / spread["rps"] if spread["rps"] else math.nan,
            "p50": same["p50_ms"] / spread["p50_ms"],
            "p99": same["p99_ms"] / spread["p99_ms"],
            # Lost races re-read and re-commit, so the CPU spent per successful write grows
            # roughly with the attempts each write needed: the closest outside view of the
            # retries, which the API does not report.
            "api_cpu_per_write": cpu_same["api"] / cpu_spread["api"],
            "firestore_cpu_per_write": (
                cpu_same["firestore"] / cpu_spread["firestore"]
                if "firestore" in cpu_same
                else math.nan
            ),
            "errors_same": same["errors"],
            "statuses_same": same["statuses"],
        }
    return out


def fresh_fixtures(stack: LocalStack, api: Api, profile: Profile) -> Fixtures:
    # The npm Firestore emulator answers a query by scanning the whole collection, so list
    # latency grows with every manifest that a create run has added, whoever owns it (see
    # list_scaling). Each round therefore starts from an emptied emulator and the same seed.
    stack.reset()
    return seed(api, profile)


def measure_round(
    stack: LocalStack,
    api: Api,
    c: int,
    repeat: int,
    profile: Profile,
    groups: dict[str, int],
    checks: list[dict[str, Any]],
) -> list[Sample]:
    """Every operation once at c clients, on freshly seeded data."""
    samples = []
    fixtures = fresh_fixtures(stack, api, profile)
    makers = operation_requests(fixtures)
    uids = operation_uids()
    pools = {op: Clients(stack.api_url, c, uids[op]) for op, _ in OPERATIONS}
    try:
        for op, _ in OPERATIONS:
            # The shared manifest is fresh per measurement, and the warm-up has its own, so
            # that the check below can match the stored assets with the 201s.
            warm, hot = (
                (api.manifest(UID_ASSETS, "bench warm-up"), api.manifest(UID_ASSETS, "bench same"))
                if op == "asset_same"
                else ("", "")
            )
            # Warm-up, not recorded, right before the measurement: opens every client's
            # connection and lets gunicorn start its threads. Not all warm-ups first: a pool
            # left idle about as long as gunicorn's 2 s keep-alive has its connections closed
            # by the server just as it sends, and those failures would be the benchmark's own.
            pools[op].run(bind_hot(makers[op], warm), profile.warmup_per_client, 5.0)
            sample = measure(pools[op], op, bind_hot(makers[op], hot), c, repeat, profile, groups)
            samples.append(sample)
            problems: list[str] = []
            if op == "asset_spread":
                for manifest_id in fixtures.spread_manifests[:c]:
                    problems += check_manifest(api, manifest_id, None)
            elif op == "asset_same":
                problems += check_manifest(api, hot, sample.statuses.get("201", 0))
            if op in ("asset_spread", "asset_same"):
                checks.append(
                    {"operation": op, "concurrency": c, "repeat": repeat, "problems": problems}
                )
            print(
                f"  #{repeat + 1} c={c:<3} {op:<13} {sample.rps:8.1f}/s "
                f"p50 {sample.p50_ms:7.1f} ms  p99 {sample.p99_ms:7.1f} ms  "
                f"errors {sample.errors}  others {sample.cpu_others * 100:3.0f}% CPU"
                + (f"  {sample.statuses}" if sample.errors else "")
                + (f"  CHECK FAILED: {'; '.join(problems)}" if problems else "")
            )
    finally:
        for pool in pools.values():
            pool.close()
    return samples


def list_scaling(
    stack: LocalStack, api: Api, profile: Profile, groups: dict[str, int]
) -> dict[str, Any]:
    """List cost (one client) with only the seed, then with other users' manifests added: an
    emulator cost that Cloud Firestore, which serves the query from an index, does not have.
    The emulator's CPU per list is given beside the latency: it barely moves with the load
    others put on a shared machine, which latency does."""

    def probe() -> tuple[float, float]:
        for _ in range(5):  # unrecorded: the first queries after a burst of writes run slow
            api.call("GET", "/manifests?limit=20", UID_LIST)
        times = []
        with CpuWindow(groups) as cpu:
            for _ in range(profile.scaling_probes):
                began = time.perf_counter()
                api.call("GET", "/manifests?limit=20", UID_LIST)
                times.append(time.perf_counter() - began)
        used = cpu.use.groups_s.get("firestore", math.nan)
        return statistics.median(times) * 1000, used * 1000 / profile.scaling_probes

    fresh_fixtures(stack, api, profile)
    p50_before, cpu_before = probe()
    writers = Clients(stack.api_url, 8, UID_CREATE)
    try:
        statuses = writers.run(
            lambda i, n: Request("POST", "/manifests", {"name": f"bench other {i}-{n}"}),
            math.ceil(profile.scaling_extra_manifests / 8),
            120.0,
        ).statuses
    finally:
        writers.close()
    added = statuses.get("201", 0)
    p50_after, cpu_after = probe()
    per_1000 = 1000 / added if added else math.nan
    return {
        "manifests_before": seeded_manifest_count(profile),
        "manifests_added": added,
        "list_p50_ms_before": p50_before,
        "list_p50_ms_after": p50_after,
        "firestore_cpu_ms_before": cpu_before,
        "firestore_cpu_ms_after": cpu_after,
        "p50_ms_per_1000_manifests": (p50_after - p50_before) * per_1000,
        "firestore_cpu_ms_per_1000_manifests": (cpu_after - cpu_before) * per_1000,
        "probes": profile.scaling_probes,
    }


def seeded_manifest_count(profile: Profile) -> int:
    """Manifest documents right after a seed: the list user's, the read one, one per client."""
    return profile.list_manifests + 1 + max(profile.concurrency)


def run(profile: Profile, quick: bool) -> dict[str, Any]:
    started = time.perf_counter()
    settings = StackSettings()
    # The bridge polls the upload bucket; nothing here uploads, and four polls a second would
    # only add noise to a two-core machine.
    settings.local.bridge_poll_interval_s = 5.0
    info = machine(
        ("functions-framework", "gunicorn", "flask", "google-cloud-firestore", "requests"),
        server_threads=int(os.environ.get("THREADS", (os.cpu_count() or 1) * 4)),
    )
    print(f"benchmark: starting the local stack under {STATE_DIR.relative_to(ROOT)}")
    samples: list[Sample] = []
    checks: list[dict[str, Any]] = []
    stack_started = time.perf_counter()
    with own_stack(STATE_DIR, functions=True, settings=settings) as stack:
        stack_start_s = time.perf_counter() - stack_started
        print(f"benchmark: stack up in {stack_start_s:.1f}s; cold starts")
        cold = cold_starts(stack, profile)

        api = Api(stack.api_url)
        groups = {"api": stack.processes["api"].pid}
        if "firestore" in stack.processes:
            groups["firestore"] = stack.processes["firestore"].pid
        # Rounds go through every concurrency in turn, repeat after repeat, so that a burst
        # of load from a neighbour on a shared machine falls on one repeat of several cells
        # (which the median then discounts) rather than on every repeat of one cell.
        for repeat in range(profile.repeats):
            print(f"benchmark: round {repeat + 1} of {profile.repeats}")
            for c in profile.concurrency:
                samples += measure_round(stack, api, c, repeat, profile, groups, checks)
        print("benchmark: list latency against the size of the manifests collection")
        scaling = list_scaling(stack, api, profile, groups)
        api_log = stack.log_path("api").read_text(errors="replace")
        server_errors = len(re.findall(r"^Traceback| ERROR ", api_log, re.MULTILINE))
        goaways = grpc_goaways(api_log)

    table = aggregate(samples)
    return {
        "mode": "quick" if quick else "full",
        "machine": info,
        "profile": asdict(profile),
        "stack_start_s": stack_start_s,
        "cold_start": cold,
        "results": {op: {str(c): row for c, row in per.items()} for op, per in table.items()},
        # Concurrencies as strings, as in "results": the report looks one up by the other's.
        "ratios": json_safe(ratios(table)),
        "integrity_checks": checks,
        "list_scaling": scaling,
        "api_log_errors": server_errors,
        "firestore_goaways": [{**g, "during": during(g["at"], samples)} for g in goaways],
        "samples": [asdict(s) for s in samples],
        "loadavg_end": os.getloadavg(),
        "wall_s": time.perf_counter() - started,
    }


# grpc's log line when the server ends the HTTP/2 connection, e.g.
# "I1121 23:44:24.250594   26723 chttp2_transport.cc:1403] ...: Got goaway [2] err=UNAVAILABLE"
_GOAWAY = re.compile(r"^[IWE](\d\d)(\d\d) (\d\d:\d\d:\d\d\.\d+) .*Got goaway \[(\d+)\]", re.M)


def grpc_goaways(log: str) -> list[dict[str, Any]]:
    """When the Firestore emulator closed the api's gRPC connection. Requests in flight then
    fail with UNAVAILABLE, and the Firestore client retries them, commits included."""
    year = dt.datetime.now().year
    found = []
    for month, day, clock, code in _GOAWAY.findall(log):
        local = dt.datetime.strptime(f"{year}-{month}-{day} {clock}", "%Y-%m-%d %H:%M:%S.%f")
        found.append({"at": local.timestamp(), "http2_error": int(code)})
    return found


def during(at: float, samples: list[Sample]) -> str | None:
    for s in samples:
        if s.started_at <= at <= s.ended_at:
            return f"{s.operation} at {s.concurrency} clients, round {s.repeat + 1}"
    return None


# ---------------------------------------------------------------------------------------------
# Output


def _fmt(value: float, digits: int = 1) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def results_rows(report: dict[str, Any]) -> list[list[str]]:
    rows = []
    vs = report["ratios"]["vs_healthz"]
    for op, _ in OPERATIONS:
        for c, row in report["results"].get(op, {}).items():
            ratio = vs.get(op, {}).get(c)
            rows.append(
                [
                    op,
                    c,
                    f"{_fmt(row['rps'])} ({_fmt(row['rps_min'])}–{_fmt(row['rps_max'])})",
                    _fmt(row["p50_ms"]),
                    _fmt(row["p99_ms"]),
                    f"{row['errors']}/{row['requests']}",
                    f"×{_fmt(ratio['p50'])}" if ratio else "1",
                    f"×{_fmt(ratio['rps'])}" if ratio else "1",
                    _fmt(row["cpu_ms_per_ok"].get("api", math.nan)),
                    _fmt(row["cpu_ms_per_ok"].get("firestore", math.nan)),
                    _fmt(row["cpu_ms_per_ok"]["client"]),
                    f"{row['cpu_busy'] * 100:.0f}% / {row['cpu_others'] * 100:.0f}%",
                ]
            )
    return rows


RESULT_HEADERS = [
    "operation", "clients", "req/s (min–max)", "p50 ms", "p99 ms", "errors", "p50 vs healthz",
    "healthz req/s ÷ op", "api CPU ms/req", "firestore CPU ms/req", "client CPU ms/req",
    "CPU ours / others",
]  # fmt: skip


def contention_rows(report: dict[str, Any]) -> list[list[str]]:
    rows = []
    for c, r in report["ratios"]["same_vs_spread"].items():
        statuses = ", ".join(f"{k}: {v}" for k, v in r["statuses_same"].items())
        rows.append(
            [
                c,
                f"×{_fmt(r['rps'], 2)}",
                f"×{_fmt(r['p50'], 2)}",
                f"×{_fmt(r['p99'], 2)}",
                f"×{_fmt(r['api_cpu_per_write'], 2)}",
                f"×{_fmt(r['firestore_cpu_per_write'], 2)}",
                statuses,
            ]
        )
    return rows


CONTENTION_HEADERS = [
    "clients", "req/s same ÷ spread", "p50 same ÷ spread", "p99 same ÷ spread",
    "api CPU/write same ÷ spread", "firestore CPU/write same ÷ spread", "same-manifest answers",
]  # fmt: skip


def cold_rows(report: dict[str, Any]) -> list[list[str]]:
    rows = []
    labels = [
        ("api", "healthz_s", "api: spawn → first GET /healthz 200"),
        ("api", "first_real_s", "api: spawn → first GET /manifests 200"),
        ("on_upload", "event_acked_s", "on_upload: spawn → CloudEvent acknowledged"),
        ("import_functions_main", "import_s", "import functions.main (fresh interpreter)"),
        ("import_functions_main", "interpreter_total_s", "interpreter start + import + exit"),
    ]
    for mode, cold in report["cold_start"]["modes"].items():
        for group, key, label in labels:
            entry = cold[group][key]
            rows.append(
                [
                    label,
                    mode,
                    _fmt(entry["median_s"] * 1000, 0),
                    f"{_fmt(entry['min_s'] * 1000, 0)}–{_fmt(entry['max_s'] * 1000, 0)}",
                    str(len(entry["runs_s"])),
                ]
            )
    return rows


COLD_HEADERS = ["cold start", "bytecode", "median ms", "min–max ms", "runs"]


# Above this share of the machine taken by other processes, a cell's figures are suspect.
NOISY_OTHERS = 0.15


def anomalies(report: dict[str, Any]) -> list[str]:
    """What a reader should not miss: errors, broken invariants, suspicious figures."""
    notes = []
    for op, per in report["results"].items():
        for c, row in per.items():
            if row["errors"]:
                examples = "; ".join(
                    f"{status}: {text[:160]}" for status, text in row["error_examples"].items()
                )
                notes.append(
                    f"{op} at {c} clients: {row['errors']} errors {row['statuses']} ({examples})"
                )
            if row["p99_ms"] < row["p50_ms"]:
                notes.append(f"{op} at {c} clients: p99 below p50 (a reporting fault)")
    for check in report["integrity_checks"]:
        problems = check["problems"]
        if problems:
            manifests = {p.split(":", 1)[0] for p in problems}
            first = sorted(manifests)[0]
            shown = "; ".join(p for p in problems if p.startswith(first + ":"))
            more = (
                f" (and {len(manifests) - 1} more manifests, in the JSON)"
                if len(manifests) > 1
                else ""
            )
            notes.append(
                f"integrity after {check['operation']} at {check['concurrency']} clients, round "
                f"{check['repeat'] + 1}: {shown}{more}"
            )
    for goaway in report["firestore_goaways"]:
        when = dt.datetime.fromtimestamp(goaway["at"]).strftime("%H:%M:%S")
        notes.append(
            f"the Firestore emulator closed the api's gRPC connection (GOAWAY, HTTP/2 error "
            f"{goaway['http2_error']}) at {when}, during {goaway['during'] or 'no measurement'}"
        )
    if report["api_log_errors"]:
        notes.append(f"the api log holds {report['api_log_errors']} error/traceback lines")
    return notes


def noisy(report: dict[str, Any]) -> list[str]:
    """Cells where other processes took a large share of the machine in some repeat."""
    return [
        f"{op} at {c} clients (up to {row['cpu_others_max'] * 100:.0f}%)"
        for op, per in report["results"].items()
        for c, row in per.items()
        if row["cpu_others_max"] > NOISY_OTHERS
    ]


def capped(report: dict[str, Any]) -> list[str]:
    """Cells whose measurements stopped at the time cap: fewer samples, by design."""
    return [
        f"{op} at {c} clients ({row['hit_time_cap']} of {row['repeats']})"
        for op, per in report["results"].items()
        for c, row in per.items()
        if row["hit_time_cap"]
    ]


def scaling_line(report: dict[str, Any]) -> str:
    s = report["list_scaling"]
    return (
        f"list (1 client) with {s['manifests_before']} manifests in the emulator: p50 "
        f"{s['list_p50_ms_before']:.1f} ms, emulator CPU {s['firestore_cpu_ms_before']:.1f} ms; "
        f"after another user added {s['manifests_added']}: {s['list_p50_ms_after']:.1f} ms, "
        f"{s['firestore_cpu_ms_after']:.1f} ms; per 1000 manifests "
        f"{s['p50_ms_per_1000_manifests']:+.1f} ms latency, "
        f"{s['firestore_cpu_ms_per_1000_manifests']:+.1f} ms emulator CPU"
    )


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    p = report["profile"]
    notes = anomalies(report)
    packages = ", ".join(f"{k} {v}" for k, v in m["packages"].items())
    imports = ", ".join(
        f"{i['package']} {i['self_ms']:.0f}" for i in report["cold_start"]["heaviest_imports"]
    )
    return f"""# API benchmark

`.venv/bin/python benchmarks/api.py{" --quick" if report["mode"] == "quick" else ""}`
({report["mode"]} run, {report["wall_s"]:.0f} s). What the figures mean: benchmarks/README.md.

## Machine

| | |
|---|---|
| date (UTC) | {m["date_utc"]} |
| cores | {m["cores"]} ({m["cpu_model"]}) |
| memory | {m["memory_gib"]} GiB |
| OS | {m["os"]} |
| Python | {m["python"]} |
| Node | {m["node"]} |
| commit | {m["commit"]}{" (working tree changed)" if m["working_tree_changed"] else ""} |
| packages | {packages} |
| api server | gunicorn, 1 worker, {m["server_threads"]} threads (functions-framework's default) |
| load average | {" / ".join(f"{x:.2f}" for x in m["loadavg_start"])} at start, {" / ".join(f"{x:.2f}" for x in report["loadavg_end"])} at end |

Everything (client threads, api function, emulators) shares these cores, so the figures are
the cost of the code on this machine, not the capacity of a deployment.

## Throughput and latency

{p["repeats"]} repeat(s) per cell, medians across repeats (req/s also min–max). Each
measurement: {p["requests_per_measurement"]} requests split over the clients (at least
{p["min_per_client"]} each), stopped at {p["max_seconds"]} s. Errors are non-2xx answers and
failed connections, summed over the repeats. Ratios compare with `healthz` at the same
concurrency in the same run. CPU per request is per successful answer. "CPU ours / others":
client + api + Firestore emulator, and everything else on the machine, as shares of all cores.

{markdown_table(RESULT_HEADERS, results_rows(report))}

## One manifest vs many (asset create)

Every asset write claims the manifest's next revision; writers that lose the race re-read and
retry (up to 12 attempts, then 503 `contention`). "same" sends every client to one manifest,
"spread" gives each client its own. The API does not report retries; CPU per successful write,
same ÷ spread, approximates the attempts each write took. The api serves at most
{m["server_threads"]} requests at once, so at more clients than that the rest wait in its
queue and no more than {m["server_threads"]} writers race.

{markdown_table(CONTENTION_HEADERS, contention_rows(report))}

After each asset measurement the manifests written were checked: asset_count equals the assets
stored, tags unique and gapless, version = asset writes + 1, and for the shared manifest every
stored asset was answered 201. {_checks_line(report)}

## Cold start

Spawn of `functions-framework --target …` with the stack's environment until the first
successful answer; median of {p["spawns"]}. Import alone: `import functions.main` timed in a
fresh interpreter, median of {p["imports"]}. Each with bytecode caches (written once
beforehand, as a deployment can ship them) and without (these machines set
PYTHONDONTWRITEBYTECODE=1: every import compiled), each from a cache folder of its own. Heaviest packages to import (ms of
their own modules, one `-X importtime` run): {imports}.

{markdown_table(COLD_HEADERS, cold_rows(report))}

Local stack start (emulators + functions + bridge): {report["stack_start_s"]:.1f} s.

## The emulator's list cost

The npm Firestore emulator scans the whole `manifests` collection for a query, so list latency
here depends on every user's manifests; each round of the table above therefore starts from an
emptied emulator and the same seed. Measured separately: {scaling_line(report)}. Cloud
Firestore serves the query from the composite index and has no such term.

## Anomalies

{chr(10).join("- " + n for n in notes) if notes else "None found."}

Measurements stopped by the {p["max_seconds"]} s cap before their count (fewer samples, by
design): {", ".join(capped(report)) or "none"}.

Cells in which other processes used more than {NOISY_OTHERS * 100:.0f}% of the machine during
some repeat (the median discounts one such repeat, not two): {", ".join(noisy(report)) or "none"}.
"""


def _checks_line(report: dict[str, Any]) -> str:
    checks = report["integrity_checks"]
    bad = [c for c in checks if c["problems"]]
    if not bad:
        return f"All {len(checks)} checks passed."
    return f"{len(bad)} of {len(checks)} checks failed; see Anomalies."


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, "smoke run, under a minute", argv)
    report = run(QUICK if args.quick else FULL, args.quick)

    print()
    print(text_table(RESULT_HEADERS, results_rows(report)))
    print()
    print(text_table(CONTENTION_HEADERS, contention_rows(report)))
    print()
    print(text_table(COLD_HEADERS, cold_rows(report)))
    print()
    print(scaling_line(report))
    notes = anomalies(report)
    print("stopped at the time cap: " + (", ".join(capped(report)) or "none"))
    print(
        f"other load above {NOISY_OTHERS * 100:.0f}% of the machine: "
        + (", ".join(noisy(report)) or "none")
    )
    print("anomalies:" if notes else "anomalies: none")
    for note in notes:
        print(f"  - {note}")
    write_json(args.out / "api.json", report, indent=2)
    write_atomically(args.out / "api.md", markdown(report))
    print(f"\nwall time {report['wall_s']:.0f} s; reports in {args.out}/api.md and api.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
