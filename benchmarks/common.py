"""What the benchmark scripts share: arguments, a local stack of their own, child processes, CPU
and memory from /proc, machine facts, medians, tables, reports and small PNG charts.

Every script imports this module before anything of the repository's: run as a script, Python
puts benchmarks/ on the path, not the repository root, which this module adds.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime as dt
import importlib.metadata
import io
import json
import math
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# Before any Google client is imported: credential lookup must never probe a metadata server.
os.environ["NO_GCE_CHECK"] = "true"

if TYPE_CHECKING:
    from infra.local.stack import LocalStack, StackSettings

REPORTS = ROOT / "benchmarks" / "reports"
CORES = len(os.sched_getaffinity(0))
FOREIGN_STACK_ENV = (
    "FIRESTORE_EMULATOR_HOST",
    "STORAGE_EMULATOR_HOST",
    "CLOUD_TASKS_EMULATOR_HOST",
)
"""Variables a shell may carry from `infra.local.stack env`. Left in place they would point a
benchmark's stack and clients at another stack, whose data it would fill and whose setup it
would measure instead."""


def arguments(
    doc: str, quick: str, argv: list[str] | None = None,
    more: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.Namespace:  # fmt: skip
    """`--quick` (a smoke run, described by `quick`) and `--out`, and what `more` adds; the
    docstring is the help."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument(
        "--out", type=Path, default=REPORTS, help="where the reports go (default: %(default)s)"
    )
    if more is not None:
        more(parser)
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# A stack of the benchmark's own, and child processes


@contextlib.contextmanager
def own_stack(
    state_dir: Path, *, functions: bool = False, settings: StackSettings | None = None
) -> Iterator[LocalStack]:
    """A LocalStack under `state_dir`, never the one a shell points at; its processes die with
    this one, and it is stopped when the block ends, on SIGTERM too."""
    from infra.local.stack import LocalStack

    for name in FOREIGN_STACK_ENV:
        if os.environ.pop(name, None) is not None:
            print(f"benchmark: ignoring {name} from the environment; it runs its own stack")
    # SIGTERM (a CI timeout, `kill`) must unwind through the `finally` that stops the stack.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    stack = LocalStack(state_dir, settings=settings, die_with_parent=True)
    try:
        stack.start(functions=functions)
        yield stack
    finally:
        stack.stop()


def use_in_this_process(stack: LocalStack, env: Mapping[str, str] | None = None) -> None:
    """Points this process's settings and clients at the stack (and at `env`'s settings)."""
    from shared.clients import reset_clients
    from shared.settings import get_settings

    os.environ.update({**stack.env, **(env or {})})
    get_settings.cache_clear()
    reset_clients()


def child_env(stack: LocalStack, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """What the stack gives its own processes: its environment, and the repository on the
    import path (infra.local.stack.start_functions)."""
    existing = os.environ.get("PYTHONPATH")
    pythonpath = f"{ROOT}{os.pathsep}{existing}" if existing else str(ROOT)
    return {**os.environ, "PYTHONUNBUFFERED": "1", **stack.env, **(extra or {}),
            "PYTHONPATH": pythonpath}  # fmt: skip


def _die_with_parent() -> None:
    # Between fork and exec: a benchmark killed outright must not leave its children behind.
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@contextlib.contextmanager
def spawned(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A child process logging to `log`, in a process group of its own so that its workers
    go with it: the whole group is stopped when the block ends."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        child = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent,
        )  # fmt: skip
    try:
        yield child
    finally:
        _stop_group(child)


def _stop_group(child: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """SIGTERM to the child's process group, SIGKILL to what is left after the grace period."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        child.poll()  # reaps the leader, which would otherwise stay in the group as a zombie
        if not any(f and int(f[2]) == child.pid for f in map(_stat, _pids())):
            break
        time.sleep(0.1)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(timeout=5)


def uploaded_manifest(
    registry: Any, uploads: Any, identity: Any, name: str,
    photos: Iterable[tuple[str, str, bytes, str]],
) -> str:  # fmt: skip
    """A manifest made as a client makes one, through the registry and the direct upload path:
    one asset per (asset type, name, image, content type). Returns its id."""
    from shared.models.assets import AssetCreate
    from shared.models.manifests import ManifestCreate

    manifest = registry.create_manifest(identity, ManifestCreate(name=name))
    for asset_type, asset_name, data, content_type in photos:
        asset = registry.create_asset(
            identity, manifest.id, AssetCreate(asset_type=asset_type, name=asset_name)
        )
        outcome = uploads.direct_upload(identity, manifest.id, asset.id, data, content_type)
        if outcome.status != "attached":
            raise RuntimeError(f"upload of {asset_name} was {outcome.status}: {outcome.detail}")
    return str(manifest.id)


class QueuedTasks:
    """Stands in for Cloud Tasks: keeps what is enqueued, for the benchmark to deliver itself."""

    def __init__(self) -> None:
        self.queued: list[Any] = []

    def enqueue(
        self, queue: str, url: str, payload: Any, *, task_id: str, delay_s: float = 0
    ) -> None:
        self.queued.append(payload)


# ---------------------------------------------------------------------------------------------
# CPU and memory from /proc


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name (which may hold spaces): state [0], parent
    [1], process group [2], utime stime cutime cstime [11:15]."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def _pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _group_cpu_s(pgid: int) -> float:
    """CPU of the live processes of a process group (a server and its workers), with what they
    used of the children they reaped."""
    ticks = sum(sum(map(int, f[11:15])) for f in map(_stat, _pids()) if f and int(f[2]) == pgid)
    return ticks / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    """This process, and the children it waited for (ffmpeg, which the local provider runs)."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _machine_ticks() -> tuple[int, int, int]:
    """(busy without steal, steal, total) clock ticks of all cores since boot."""
    first = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    user, nice, system, idle, iowait, irq, softirq, steal = (int(f) for f in first)
    busy = user + nice + system + irq + softirq
    return busy, steal, busy + steal + idle + iowait


@dataclass(frozen=True)
class CpuUse:
    """CPU over a stretch of work: this process's, each watched process group's, and the whole
    machine's. With two shared cores, a stretch during which other processes used much of them
    is slower for that alone: the reports say how much they used."""

    wall_s: float
    own_s: float
    groups_s: dict[str, float]
    busy_share: float
    """Busy time of all cores (ours and everyone else's, steal excluded) ÷ their time."""
    steal_share: float
    """Time the hypervisor gave the cores to other machines, same scale."""

    @property
    def others_share(self) -> float:
        """The share of all cores that other processes (and other machines) used. Ticks are
        coarse (10 ms): a short stretch could come out slightly negative, hence the clamp."""
        ours = (self.own_s + sum(self.groups_s.values())) / max(self.wall_s * CORES, 1e-9)
        return max(0.0, self.busy_share + self.steal_share - ours)


class CpuWindow:
    """`with CpuWindow({"firestore": pgid}) as cpu: …`, then `cpu.use`."""

    def __init__(self, groups: Mapping[str, int] | None = None) -> None:
        self.groups = dict(groups or {})

    def _read(self) -> tuple[float, float, dict[str, float], tuple[int, int, int]]:
        groups = {name: _group_cpu_s(pgid) for name, pgid in self.groups.items()}
        return time.perf_counter(), _own_cpu_s(), groups, _machine_ticks()

    def __enter__(self) -> CpuWindow:
        self._start = self._read()
        return self

    def __exit__(self, *exc_info: object) -> None:
        (wall0, own0, groups0, ticks0), (wall1, own1, groups1, ticks1) = self._start, self._read()
        busy, steal, total = (b - a for a, b in zip(ticks0, ticks1, strict=True))
        self.use = CpuUse(
            wall_s=wall1 - wall0,
            own_s=own1 - own0,
            groups_s={name: groups1[name] - groups0[name] for name in groups0},
            busy_share=busy / total if total else 0.0,
            steal_share=steal / total if total else 0.0,
        )


def _kib(text: str, key: str) -> int:
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def tree_memory(root: int) -> dict[str, Any]:
    """Summed over a process and its descendants: RSS now, peak RSS (VmHWM: each process's own
    peak, so the sum bounds the tree's peak from above) and PSS (shared pages split between the
    processes that share them: the sum does not count them twice, as RSS does)."""
    children: dict[int, list[int]] = defaultdict(list)
    for pid in _pids():
        fields = _stat(pid)
        if fields and fields[0] not in ("Z", "X"):
            children[int(fields[1])].append(pid)
    rss = hwm = pss = 0
    processes, todo = [], [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        with contextlib.suppress(OSError):
            pss += _kib(Path(f"/proc/{pid}/smaps_rollup").read_text(), "Pss")
        rss += _kib(status, "VmRSS")
        hwm += _kib(status, "VmHWM")
        processes.append(
            {"pid": pid, "rss_mib": round(_kib(status, "VmRSS") / 1024, 1), "cmd": cmdline[:120]}
        )
    return {"rss_mib": round(rss / 1024, 1), "peak_rss_mib": round(hwm / 1024, 1),
            "pss_mib": round(pss / 1024, 1), "processes": processes}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Machine facts


def package_version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def command_output(*argv: str) -> str:
    try:
        return subprocess.run(
            argv, cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except OSError:
        return "?"


def machine(packages: Sequence[str], **extra: Any) -> dict[str, Any]:
    """What a reader needs to compare runs: when, on what machine, which code and packages."""
    cpuinfo = ""
    with contextlib.suppress(OSError):
        cpuinfo = Path("/proc/cpuinfo").read_text()
    models = [
        line.split(":", 1)[1] for line in cpuinfo.splitlines() if line.startswith("model name")
    ]
    return {
        "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "cores": CORES,
        "cpu_model": models[0].strip() if models else "",
        "memory_gib": round(_kib(Path("/proc/meminfo").read_text(), "MemTotal") / 2**20, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "node": command_output("node", "--version"),
        "commit": command_output("git", "rev-parse", "--short", "HEAD"),
        # Figures belong to the code that ran: say when tracked files differed from the commit.
        "working_tree_changed": bool(
            command_output("git", "status", "--porcelain", "--untracked-files=no")
        ),
        "packages": {p: package_version(p) for p in packages},
        **extra,
        "loadavg_start": os.getloadavg(),
    }


# ---------------------------------------------------------------------------------------------
# Statistics, tables, reports


def median(values: Iterable[float]) -> float:
    """NaN for no values: a measurement not made, which reports show as a dash."""
    values = list(values)
    return float(statistics.median(values)) if values else math.nan


def spread(values: Iterable[float]) -> dict[str, float]:
    values = list(values)
    return {"median": median(values), "min": min(values), "max": max(values), "count": len(values)}


def text_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def markdown_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()
) -> str:
    """`right`: the columns (by index) aligned right, numbers mostly."""
    rule = "|" + "".join("---:|" if i in right else "---|" for i in range(len(headers)))
    return "\n".join(["| " + " | ".join(headers) + " |", rule,
                      *("| " + " | ".join(r) + " |" for r in rows)])  # fmt: skip


def write_atomically(path: Path, content: str | bytes) -> None:
    # Readers (and git) never see half a report if the run is killed while writing.
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    if isinstance(content, bytes):
        temporary.write_bytes(content)
    else:
        temporary.write_text(content)
    temporary.replace(path)


def json_safe(value: Any, digits: int | None = None) -> Any:
    """Reports as strict JSON: NaN and infinities (a measurement not made) become null; floats
    rounded to `digits` where given."""
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return None
        return value if digits is None else round(value, digits)
    if isinstance(value, dict):
        return {str(k): json_safe(v, digits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v, digits) for v in value]
    return value


def write_json(path: Path, report: Any, *, indent: int = 1, digits: int | None = None) -> None:
    write_atomically(path, json.dumps(json_safe(report, digits), indent=indent, default=str) + "\n")


# ---------------------------------------------------------------------------------------------
# Charts: small PNGs beside a report's tables, drawn with Pillow (no plotting dependency)

_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40))
_GREY, _BLACK = (220, 220, 220), (0, 0, 0)


def _canvas(width: int, height: int, title: str) -> tuple[Any, Any, Any]:
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(13)
    draw.text((10, 8), title, fill=_BLACK, font=font)
    return image, draw, font


def _png(image: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG", optimize=True)
    return out.getvalue()


def bar_chart(title: str, bars: Sequence[tuple[str, float]], unit: str) -> bytes:
    """Horizontal bars in the order given, each labelled with its value: PNG bytes."""
    row, width = 20, 720
    image, draw, font = _canvas(width, 40 + row * len(bars), title)
    left = 16 + max((font.getlength(label) for label, _ in bars), default=0)
    longest = max((value for _, value in bars), default=0) or 1
    room = width - left - 70  # what is left for the bars once the value is written after them
    for i, (label, value) in enumerate(bars):
        y = 34 + i * row
        draw.text((8, y), label, fill=_BLACK, font=font)
        end = left + room * max(value, 0) / longest
        draw.rectangle((left, y + 1, max(end, left + 1), y + row - 5), fill=_COLOURS[0])
        draw.text((end + 5, y), f"{value:.2f} {unit}", fill=_BLACK, font=font)
    return _png(image)


def line_chart(
    title: str, x_label: str, y_label: str, series: Mapping[str, Sequence[tuple[float, float]]]
) -> bytes:
    """Lines through (x, y) points, one per series, y from zero: PNG bytes."""
    width, height, left, right, top, bottom = 640, 360, 56, 20, 56, 40
    image, draw, font = _canvas(width, height, title)
    xs = sorted({x for points in series.values() for x, _ in points})
    low, high = (xs[0], xs[-1]) if len(xs) > 1 else (xs[0] - 1, xs[0] + 1)
    # Grid lines at round values (1, 2 or 5 times a power of ten), enough to hold every point.
    largest = max((y for points in series.values() for _, y in points), default=0) or 1
    power = 10 ** math.floor(math.log10(largest / 5))
    step = next(f * power for f in (1, 2, 5, 10) if f * power * 5 >= largest)
    lines = math.ceil(largest / step)

    def at(x: float, y: float) -> tuple[float, float]:
        return (left + (x - low) / (high - low) * (width - left - right),
                height - bottom - y / (step * lines) * (height - top - bottom))  # fmt: skip

    for n in range(lines + 1):
        _, y = at(low, n * step)
        draw.line((left, y, width - right, y), fill=_GREY)
        text = f"{n * step:g}"
        draw.text((left - 6 - font.getlength(text), y - 7), text, fill=_BLACK, font=font)
    for x in xs:
        px, py = at(x, 0)
        draw.text((px - font.getlength(f"{x:g}") / 2, py + 6), f"{x:g}", fill=_BLACK, font=font)
    draw.line((left, top, left, height - bottom, width - right, height - bottom), fill=_BLACK)
    draw.text(
        (width - right - font.getlength(x_label), height - 18), x_label, fill=_BLACK, font=font
    )
    draw.text((8, top - 18), y_label, fill=_BLACK, font=font)
    legend_x = left + 60.0
    for (name, points), colour in zip(series.items(), _COLOURS * 4, strict=False):
        coords = [at(x, y) for x, y in sorted(points)]
        if len(coords) > 1:
            draw.line(coords, fill=colour, width=2)
        for px, py in coords:
            draw.ellipse((px - 3, py - 3, px + 3, py + 3), fill=colour)
        draw.rectangle((legend_x, top - 14, legend_x + 10, top - 4), fill=colour)
        draw.text((legend_x + 14, top - 18), name, fill=_BLACK, font=font)
        legend_x += 30 + font.getlength(name)
    return _png(image)
