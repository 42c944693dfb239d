"""The local stack: emulators for Firestore, Cloud Storage and Cloud Tasks, the functions, and the
bridge that turns new uploads into storage events. Everything listens on loopback only, on free
ports picked at start, and logs to <state dir>/logs/<name>.log.

    .venv/bin/python -m infra.local.stack up [--emulators-only] [--functions-source PATH]
    .venv/bin/python -m infra.local.stack status | env | reset | down

`up` leaves the processes running and records them in <state dir>/stack.json, which `down`,
`status`, `env` and `reset` read. Tests use `LocalStack` directly (see tests/conftest.py).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
QUEUES = ("manifesting", "pipeline")
FUNCTION_TARGETS = ("api", "on_upload", "run_stage", "sweep")
_EMULATORS = ("firestore", "storage", "tasks")


class StackSettingsLocal(BaseModel):
    state_dir: str = ".local"
    tasks_location: str = "us-central1"
    tasks_max_retries: int = Field(default=5, ge=0)
    """Retries after the first attempt; the emulator's own default is to retry forever."""
    tasks_dispatch_deadline_s: float = Field(default=600.0, gt=0)
    startup_timeout_s: float = Field(default=30.0, gt=0)
    bridge_poll_interval_s: float = Field(default=0.25, gt=0)
    bridge_max_attempts: int = Field(default=8, ge=1)
    fork_poll_s: float = Field(default=1.0, ge=0)
    """How often a fork waiting for its uploads looks again (FRAMEFORK_TASKS__FORK_POLL_S);
    the application's default, 5 s, is a production pace."""
    sweep_interval_s: float = Field(default=5.0, gt=0)
    """How often the sweep function runs (Cloud Scheduler: every minute)."""
    stage_lease_s: int = Field(default=10, ge=1)
    job_lease_s: int = Field(default=10, ge=1)
    """Shorter than production's leases (FRAMEFORK_TASKS__STAGE_LEASE_S, 900 s, and
    FRAMEFORK_MODELS__JOB_LEASE_S, 120 s), so that work whose worker died here is taken up
    again within seconds; the local models are fast enough to renew them in time."""


class StackSettingsStorage(BaseModel):
    upload_bucket: str = "framefork-uploads"
    media_bucket: str = "framefork-media"


class StackSettings(BaseSettings):
    """What the stack needs, read from the same variables as shared.settings.

    Kept apart from shared.settings on purpose: the stack must start even when the
    application's settings demand secrets (which have no defaults) that the stack never uses.
    """

    model_config = SettingsConfigDict(
        env_prefix="FRAMEFORK_", env_nested_delimiter="__", extra="ignore"
    )

    project_id: str = Field(default="framefork-local", validation_alias="GOOGLE_CLOUD_PROJECT")
    functions_source: str = "functions/main.py"
    storage: StackSettingsStorage = Field(default_factory=StackSettingsStorage)
    local: StackSettingsLocal = Field(default_factory=StackSettingsLocal)


class StackError(RuntimeError):
    pass


class ResetUnavailable(StackError):
    """Raised by reset() when Firestore was not started by this stack and cannot be wiped."""


@dataclass
class ProcessRecord:
    name: str
    pid: int
    start_ticks: int
    """Start time from /proc, so a recycled pid is never mistaken for ours."""
    argv: list[str]
    log: str
    tag: str = ""
    """The value of TAG_VARIABLE in its environment, which every descendant inherits."""


# ---------------------------------------------------------------------------------------------
# Processes and ports


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, process group, start time in ticks) of a pid, or None if it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # the command name may hold spaces
    return fields[0], int(fields[2]), int(fields[19])


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in a process group."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat and stat[1] == pgid and stat[0] not in ("Z", "X"):
                members.append(int(entry))
    return members


def _ours(record: ProcessRecord) -> bool:
    """Whether the record's process group still holds processes that we started."""
    leader = _proc_stat(record.pid)
    if leader is not None and leader[0] not in ("Z", "X"):
        return leader[2] == record.start_ticks
    # Leader gone: Linux never hands out a pid still in use as a group id, so any members
    # left in that group are the leader's own children.
    return bool(_group_members(record.pid))


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


# Set to a value of its own in the environment of every process the stack starts. A descendant
# that leaves the process group (BentoML's worker calls setsid) or outlives its parent (then
# reparented to init) still inherits it, so it is how stop() finds such processes.
TAG_VARIABLE = "LOCAL_STACK_TAG"


def _tagged(tag: str) -> list[int]:
    """Live processes whose environment carries this tag (our own user's: others' environ is
    unreadable). Recycled pids are no risk: the tag is random per start."""
    if not tag:
        return []
    needle = f"\0{TAG_VARIABLE}={tag}\0".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:  # gone, another user's, a kernel thread
            continue
        if needle in b"\0" + environ:
            stat = _proc_stat(int(entry))
            if stat and stat[0] not in ("Z", "X"):
                found.append(int(entry))
    return found


def _signal_all(record: ProcessRecord, signum: int) -> None:
    """The record's process group, and every process of its tag outside that group."""
    _signal_group(record.pid, signum)
    for pid in _tagged(record.tag):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def _left(record: ProcessRecord) -> bool:
    """Whether anything the record started still lives, in its group or out of it."""
    return bool(_group_members(record.pid)) or bool(_tagged(record.tag))


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if the test session is killed outright, its
    # emulators get SIGTERM instead of lingering.
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    # No SO_REUSEADDR: the bind must fail exactly when a server would fail to listen.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port(taken: set[int] | None = None) -> int:
    taken = taken if taken is not None else set()
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((LOOPBACK, 0))
            port = int(probe.getsockname()[1])
        if port not in taken and port_is_free(port):
            taken.add(port)
            return port
    raise StackError("no free loopback port found")


def port_is_open(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_ok(url: str, method: str = "GET", timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=timeout):
            return True
    except (urllib.error.URLError, http.client.HTTPException, OSError):
        return False


def _http(url: str, method: str = "GET", body: dict[str, Any] | None = None) -> int:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _http_text(url: str, timeout: float = 2.0) -> str:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return str(reply.read(64).decode(errors="replace"))
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError):
        return ""


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


# ---------------------------------------------------------------------------------------------
# Signing key


def write_signer_key(path: Path, project_id: str) -> Path:
    """A throwaway service-account key, so signed URLs can be made without Google credentials."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    document = {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": secrets.token_hex(20),
        "private_key": pem,
        "client_email": f"local-signer@{project_id}.iam.gserviceaccount.com",
        "client_id": str(secrets.randbelow(10**20)),
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(document, out, indent=2)
    return path


# ---------------------------------------------------------------------------------------------
# The stack


class LocalStack:
    """Emulators, optionally the functions and the event bridge, as child processes.

    A stack is started in this process (`start()`), or loaded from the state file of one that
    `up` started earlier (`LocalStack.load()`); both can be stopped, reset and inspected.
    """

    def __init__(
        self,
        state_dir: str | Path | None = None,
        *,
        functions_source: str | Path | None = None,
        settings: StackSettings | None = None,
        die_with_parent: bool = False,
    ) -> None:
        self.settings = settings or StackSettings()
        self.state_dir = _absolute(state_dir or self.settings.local.state_dir)
        self.functions_source = _absolute(functions_source or self.settings.functions_source)
        self.project_id = self.settings.project_id
        self.tasks_location = self.settings.local.tasks_location
        self.upload_bucket = self.settings.storage.upload_bucket
        self.media_bucket = self.settings.storage.media_bucket
        self.ports: dict[str, int] = {}
        self.processes: dict[str, ProcessRecord] = {}
        self.external_firestore: str | None = None
        """FIRESTORE_EMULATOR_HOST found in the environment at start; None when we run our own."""
        self.external_firestore_resettable = False
        self._die_with_parent = die_with_parent
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._spawned: dict[str, tuple[list[str], Path, dict[str, str] | None]] = {}
        """How each child was started: one that dies while starting is started once more."""
        self._tasks_client: Any = None

    # -- where things are ---------------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.state_dir / "stack.json"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def signer_key_file(self) -> Path:
        return self.state_dir / "signer-key.json"

    @property
    def firestore_host(self) -> str:
        if self.external_firestore:
            return self.external_firestore
        return f"{LOOPBACK}:{self._port('firestore')}"

    @property
    def firestore_admin_url(self) -> str | None:
        if self.external_firestore:
            return None
        return f"http://{LOOPBACK}:{self._port('firestore_admin')}"

    @property
    def can_reset_firestore(self) -> bool:
        """Whether reset() can empty Firestore: always for our own; for one named by
        FIRESTORE_EMULATOR_HOST only when it is the official emulator (it has a reset API)."""
        return self.external_firestore is None or self.external_firestore_resettable

    @property
    def storage_url(self) -> str:
        return f"http://{LOOPBACK}:{self._port('storage')}"

    @property
    def tasks_host(self) -> str:
        return f"{LOOPBACK}:{self._port('tasks')}"

    @property
    def api_url(self) -> str:
        return f"http://{LOOPBACK}:{self._port('api')}"

    @property
    def on_upload_url(self) -> str:
        return f"http://{LOOPBACK}:{self._port('on_upload')}"

    @property
    def models_url(self) -> str:
        return f"http://{LOOPBACK}:{self._port('models')}"

    @property
    def functions_running(self) -> bool:
        return "api" in self.processes

    def queue_path(self, queue: str) -> str:
        return f"projects/{self.project_id}/locations/{self.tasks_location}/queues/{queue}"

    @property
    def env(self) -> dict[str, str]:
        """What the functions, the tests and a developer's shell need to reach the stack."""
        return {
            "GOOGLE_CLOUD_PROJECT": self.project_id,
            "NO_GCE_CHECK": "true",
            "FIRESTORE_EMULATOR_HOST": self.firestore_host,
            "STORAGE_EMULATOR_HOST": self.storage_url,
            "CLOUD_TASKS_EMULATOR_HOST": self.tasks_host,
            "FRAMEFORK_ENVIRONMENT": "local",
            "FRAMEFORK_LOG_FORMAT": "text",  # readable lines in .local/…/logs; JSON elsewhere
            "FRAMEFORK_AUTH__MODE": "development",
            "FRAMEFORK_STORAGE__UPLOAD_BUCKET": self.upload_bucket,
            "FRAMEFORK_STORAGE__MEDIA_BUCKET": self.media_bucket,
            "FRAMEFORK_STORAGE__SIGNER_KEY_FILE": str(self.signer_key_file),
            "FRAMEFORK_STORAGE__SIGNED_URL_ENDPOINT": self.storage_url,
            "FRAMEFORK_TASKS__LOCATION": self.tasks_location,
            "FRAMEFORK_TASKS__FORK_POLL_S": str(self.settings.local.fork_poll_s),
            "FRAMEFORK_TASKS__STAGE_LEASE_S": str(self.settings.local.stage_lease_s),
            "FRAMEFORK_MODELS__JOB_LEASE_S": str(self.settings.local.job_lease_s),
            "FRAMEFORK_MODELS__OFFLINE_DIR": str(ROOT / ".models/offline"),
            **(
                {
                    "FRAMEFORK_TASKS__MANIFESTING_URL": f"{self.models_url}/tasks/run_job",
                    # The faces API that checks keyframes (plain HTTP here, no ID token).
                    "FRAMEFORK_IDENTITY__MODEL_SERVICE_URL": self.models_url,
                }
                if "models" in self.ports
                else {}
            ),
            **(
                {"FRAMEFORK_TASKS__PIPELINE_URL": f"http://{LOOPBACK}:{self.ports['run_stage']}/"}
                if "run_stage" in self.ports
                else {}
            ),
        }

    def log_path(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    def _port(self, name: str) -> int:
        try:
            return self.ports[name]
        except KeyError:
            raise StackError(f"{name} is not part of the running stack") from None

    # -- starting -----------------------------------------------------------------------------

    def start(self, *, functions: bool = True) -> LocalStack:
        """Start the emulators, and the functions with the bridge unless functions=False."""
        try:
            self.start_emulators()
            if functions:
                self.start_functions()
        except BaseException:
            self.stop()
            raise
        return self

    def start_emulators(self) -> None:
        if self.processes:
            raise StackError("this stack is already started")
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.settings.local.startup_timeout_s
        taken: set[int] = set()

        external = os.environ.get("FIRESTORE_EMULATOR_HOST")
        if external:
            host, _, port = external.rpartition(":")
            if not port_is_open(int(port), host or LOOPBACK, timeout=2):
                raise StackError(
                    f"FIRESTORE_EMULATOR_HOST={external} is set but nothing answers there; "
                    "unset it to let the stack start its own Firestore"
                )
            self.external_firestore = external
            # The official emulator answers "Ok" over HTTP on its port and can be emptied
            # through its REST API; any other (this stack's npm one included) cannot.
            self.external_firestore_resettable = _http_text(f"http://{external}/").startswith("Ok")
        else:
            self.ports["firestore"] = free_port(taken)
            self.ports["firestore_admin"] = free_port(taken)
            self._spawn(
                "firestore",
                ["node", "server.js"],
                cwd=ROOT / "infra/local/firestore",
                env={
                    "FIRESTORE_HOST": LOOPBACK,
                    "FIRESTORE_PORT": str(self.ports["firestore"]),
                    "FIRESTORE_ADMIN_PORT": str(self.ports["firestore_admin"]),
                },
            )

        self.ports["storage"] = free_port(taken)
        self._spawn(
            "storage",
            [
                str(_venv_bin(".venv", "gcp-storage-emulator")),
                "start",
                "--host",
                LOOPBACK,
                "--port",
                str(self.ports["storage"]),
                "--in-memory",
            ],
        )

        self.ports["tasks"] = free_port(taken)
        local = self.settings.local
        self._spawn(
            "tasks",
            [
                str(_venv_bin(".venv-tasks", "python")),
                str(ROOT / "infra/local/tasks_emulator.py"),
                "--host",
                LOOPBACK,
                "--port",
                str(self.ports["tasks"]),
                "--max-retries",
                str(local.tasks_max_retries),
                "--dispatch-deadline",
                str(local.tasks_dispatch_deadline_s),
                *(arg for q in QUEUES for arg in ("--queue", self.queue_path(q))),
            ],
        )

        write_signer_key(self.signer_key_file, self.project_id)
        if not self.external_firestore:
            self._wait(
                "firestore",
                lambda: (
                    http_ok(f"{self.firestore_admin_url}/health")
                    and port_is_open(self.ports["firestore"])
                ),
                deadline,
            )
        self._wait("storage", lambda: http_ok(f"{self.storage_url}/"), deadline)
        self._wait("tasks", lambda: port_is_open(self.ports["tasks"]), deadline)
        self._create_buckets()
        self.save()

    def start_functions(self) -> None:
        """Add both functions and the event bridge to running emulators."""
        if "storage" not in self.processes:
            raise StackError("start the emulators first")
        if self.functions_running:
            return
        if not self.functions_source.is_file():
            raise StackError(
                f"functions source {self.functions_source} not found; set "
                "FRAMEFORK_FUNCTIONS_SOURCE or pass --functions-source, or start --emulators-only"
            )
        deadline = time.monotonic() + self.settings.local.startup_timeout_s
        taken = set(self.ports.values())
        try:
            for name in ("models", *FUNCTION_TARGETS):
                self.ports[name] = free_port(taken)
            # After every port is known: the api enqueues tasks to the model service and to
            # run_stage, and run_stage enqueues its next stages.
            function_env = {**self.env, "PYTHONPATH": _pythonpath()}
            self._spawn(
                "models",
                [
                    str(_venv_bin(".venv", "bentoml")),
                    "serve",
                    "model_service.service:ModelService",
                    "--host",
                    LOOPBACK,
                    "--port",
                    str(self.ports["models"]),
                ],
                env={
                    **function_env,
                    # No usage reports leave the machine; BentoML's home stays in the stack.
                    "BENTOML_DO_NOT_TRACK": "true",
                    "BENTOML_HOME": str(self.state_dir / "bentoml"),
                },
            )
            for target in FUNCTION_TARGETS:
                self._spawn(
                    target,
                    [
                        str(_venv_bin(".venv", "functions-framework")),
                        "--source",
                        str(self.functions_source),
                        "--target",
                        target,
                        "--host",
                        LOOPBACK,
                        "--port",
                        str(self.ports[target]),
                    ],
                    env=function_env,
                )
            self._wait("api", lambda: http_ok(f"{self.api_url}/healthz"), deadline)
            self._wait("on_upload", lambda: port_is_open(self.ports["on_upload"]), deadline)
            self._wait("run_stage", lambda: port_is_open(self.ports["run_stage"]), deadline)
            self._wait("sweep", lambda: port_is_open(self.ports["sweep"]), deadline)
            self._wait("models", lambda: http_ok(f"{self.models_url}/readyz"), deadline)
            self._spawn(
                "bridge",
                [
                    str(_venv_bin(".venv", "python")),
                    "-m",
                    "infra.local.event_bridge",
                    "--bucket",
                    self.upload_bucket,
                    "--target",
                    f"{self.on_upload_url}/",
                    "--interval",
                    str(self.settings.local.bridge_poll_interval_s),
                    "--max-attempts",
                    str(self.settings.local.bridge_max_attempts),
                ],
                env=function_env,
            )
            # The bridge has no port; it is healthy once it has announced itself and is alive.
            self._wait("bridge", lambda: "watching" in _log_tail(self.log_path("bridge")), deadline)
            self._spawn(
                "scheduler",
                [
                    str(_venv_bin(".venv", "python")),
                    "-m",
                    "infra.local.scheduler",
                    "--target",
                    f"http://{LOOPBACK}:{self.ports['sweep']}/",
                    "--interval",
                    str(self.settings.local.sweep_interval_s),
                ],
                env=function_env,
            )
            self._wait(
                "scheduler", lambda: "scheduling" in _log_tail(self.log_path("scheduler")), deadline
            )
        except BaseException:
            self._stop_names(["scheduler", "bridge", "models", *FUNCTION_TARGETS])
            for target in ("models", *FUNCTION_TARGETS):
                self.ports.pop(target, None)
            self.save()
            raise
        self.save()

    def _spawn(
        self,
        name: str,
        argv: list[str],
        *,
        cwd: Path = ROOT,
        env: dict[str, str] | None = None,
    ) -> None:
        self._spawned[name] = (argv, cwd, env)
        tag = secrets.token_hex(8)
        log = self.log_path(name)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "wb") as out:
            child = subprocess.Popen(
                argv,
                cwd=cwd,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {}), TAG_VARIABLE: tag},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so stop() reaches grandchildren
                preexec_fn=_die_with_parent if self._die_with_parent else None,
            )
        stat = _proc_stat(child.pid)
        self._children[name] = child
        self.processes[name] = ProcessRecord(
            name=name,
            pid=child.pid,
            start_ticks=stat[2] if stat else 0,
            argv=argv,
            log=str(log),
            tag=tag,
        )

    def _wait(self, name: str, healthy: Callable[[], bool], deadline: float) -> None:
        child, retried = self._children.get(name), False
        while True:
            if child is not None and child.poll() is not None and not retried:
                # A start can die of a race outside our code (gRPC's poller has aborted a
                # function's start on a loaded machine): start it once more before failing.
                retried = True
                died = _log_tail(self.log_path(name))
                self._kill_and_spawn(name)  # what is left of it, port too
                with self.log_path(name).open("ab") as log:
                    log.write(f"(started again after: {died})\n".encode())
                child = self._children[name]
                continue
            if child is not None and child.poll() is not None:
                raise StackError(
                    f"{name} exited with status {child.returncode}; "
                    f"{self.log_path(name)}:\n{_log_tail(self.log_path(name))}"
                )
            if healthy():
                return
            if time.monotonic() > deadline:
                raise StackError(
                    f"{name} not healthy within {self.settings.local.startup_timeout_s:.0f}s; "
                    f"{self.log_path(name)}:\n{_log_tail(self.log_path(name))}"
                )
            time.sleep(0.1)

    def _create_buckets(self) -> None:
        for bucket in (self.upload_bucket, self.media_bucket):
            status = _http(
                f"{self.storage_url}/storage/v1/b?project={self.project_id}",
                "POST",
                {"name": bucket},
            )
            if status not in (200, 409):  # 409: it exists already
                raise StackError(f"creating bucket {bucket} answered HTTP {status}")

    # -- using --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def paused(self, name: str) -> Iterator[None]:
        """One of the stack's processes stopped (SIGSTOP) for the duration: its port still
        accepts connections, but nothing answers, as with a service that hangs or is cut off.
        It continues, state intact, on leaving."""
        record = self.processes.get(name)
        if record is None or not _ours(record):
            raise StackError(f"{name} is not running in this stack")
        _signal_all(record, signal.SIGSTOP)
        try:
            yield
        finally:
            _signal_all(record, signal.SIGCONT)

    def kill_and_restart(self, name: str) -> None:
        """SIGKILL one process and all it started (a crashed instance: no cleanup runs), then
        start it again on the same port, as Cloud Run starts a new instance."""
        record = self.processes.get(name)
        if record is None or name not in self._spawned:
            raise StackError(f"{name} is not running in this stack")
        self._kill_and_spawn(name)
        healthy = self._health_checks().get(name, lambda: True)
        self._wait(name, healthy, time.monotonic() + self.settings.local.startup_timeout_s)
        self.save()

    def _kill_and_spawn(self, name: str) -> None:
        """SIGKILL what the process left (its group, and what left the group: BentoML's worker
        holds the model service's socket in a session of its own), then start it again."""
        record = self.processes[name]
        _signal_all(record, signal.SIGKILL)
        released = time.monotonic() + 5.0  # SIGKILL lands asynchronously
        while _left(record) and time.monotonic() < released:
            if name in self._children:
                self._children[name].poll()  # reap it, or it lingers as a zombie
            time.sleep(0.05)
        argv, cwd, env = self._spawned[name]
        self._spawn(name, argv, cwd=cwd, env=env)

    def reset(self, *, firestore: bool = True) -> None:
        """Empty Firestore, Storage (buckets recreated) and the task queues."""
        if firestore and not self.can_reset_firestore:
            raise ResetUnavailable(
                f"Firestore at {self.external_firestore} was not started by this stack"
            )
        if firestore and self.external_firestore:
            status = _http(
                f"http://{self.external_firestore}/emulator/v1/projects/{self.project_id}"
                "/databases/(default)/documents",
                "DELETE",
            )
            if status != 200:
                raise StackError(f"Firestore reset answered HTTP {status}")
        elif firestore:
            status = _http(f"{self.firestore_admin_url}/reset", "POST")
            if status != 200:
                raise StackError(f"Firestore reset answered HTTP {status}")
        status = _http(f"{self.storage_url}/wipe")
        if status != 200:
            raise StackError(f"storage wipe answered HTTP {status}")
        self._create_buckets()
        self._purge_queues()

    def _purge_queues(self) -> None:
        # Left over tasks would otherwise reach handlers during the next test.
        if self._tasks_client is None:
            import grpc
            from google.cloud import tasks_v2
            from google.cloud.tasks_v2.services.cloud_tasks.transports import (
                CloudTasksGrpcTransport,
            )

            channel = grpc.insecure_channel(self.tasks_host)
            self._tasks_client = tasks_v2.CloudTasksClient(
                transport=CloudTasksGrpcTransport(channel=channel)
            )
        for queue in QUEUES:
            self._tasks_client.purge_queue(name=self.queue_path(queue), timeout=10)

    def _health_checks(self) -> dict[str, Callable[[], bool]]:
        return {
            "firestore": lambda: http_ok(f"{self.firestore_admin_url}/health", timeout=1),
            "storage": lambda: http_ok(f"{self.storage_url}/", timeout=1),
            "tasks": lambda: port_is_open(self.ports["tasks"]),
            "api": lambda: http_ok(f"{self.api_url}/healthz", timeout=2),
            "on_upload": lambda: port_is_open(self.ports["on_upload"]),
            "run_stage": lambda: port_is_open(self.ports["run_stage"]),
            "sweep": lambda: port_is_open(self.ports["sweep"]),
            "models": lambda: http_ok(f"{self.models_url}/readyz", timeout=2),
        }

    def status(self) -> dict[str, dict[str, Any]]:
        """Per process: pid, whether it runs, and whether it answers its health check."""
        checks = self._health_checks()
        report: dict[str, dict[str, Any]] = {}
        for name, record in self.processes.items():
            alive = _ours(record)
            check = checks.get(name)
            report[name] = {
                "pid": record.pid,
                "running": alive,
                "healthy": alive and (check() if check else True),
                "port": self.ports.get(name),
                "log": record.log,
            }
        return report

    @property
    def is_running(self) -> bool:
        return bool(self.processes) and all(_ours(r) for r in self.processes.values())

    # -- stopping -----------------------------------------------------------------------------

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM every process group, SIGKILL what is left after grace_s; forget the state."""
        self._stop_names(list(self.processes), grace_s)
        self.ports.clear()
        self.external_firestore = None
        self.external_firestore_resettable = False
        self._tasks_client = None
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()

    def _stop_names(self, names: list[str], grace_s: float = 5.0) -> None:
        records = [self.processes[n] for n in names if n in self.processes]
        # A record whose group is gone may still have tagged descendants elsewhere (the model
        # service's worker after its parent was killed).
        live = [r for r in records if _ours(r) or _tagged(r.tag)]
        for record in live:
            _signal_all(record, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while live and time.monotonic() < deadline:
            self._reap()
            live = [r for r in live if _left(r)]
            if live:
                time.sleep(0.05)
        for record in live:
            _signal_all(record, signal.SIGKILL)
        for record in records:
            child = self._children.pop(record.name, None)
            if child is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(timeout=2)
            del self.processes[record.name]

    def _reap(self) -> None:
        for child in self._children.values():
            child.poll()

    def __enter__(self) -> LocalStack:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- state file ---------------------------------------------------------------------------

    def save(self) -> None:
        state = {
            "project_id": self.project_id,
            "tasks_location": self.tasks_location,
            "upload_bucket": self.upload_bucket,
            "media_bucket": self.media_bucket,
            "functions_source": str(self.functions_source),
            "external_firestore": self.external_firestore,
            "external_firestore_resettable": self.external_firestore_resettable,
            "ports": self.ports,
            "processes": {name: asdict(record) for name, record in self.processes.items()},
            "env": self.env,
        }
        self.state_dir.mkdir(parents=True, exist_ok=True)
        temporary = self.state_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(state, indent=2) + "\n")
        temporary.replace(self.state_file)

    @classmethod
    def load(cls, state_dir: str | Path | None = None) -> LocalStack | None:
        """The stack recorded in the state file, or None when there is none."""
        stack = cls(state_dir)
        try:
            state = json.loads(stack.state_file.read_text())
        except FileNotFoundError:
            return None
        stack.project_id = state["project_id"]
        stack.tasks_location = state["tasks_location"]
        stack.upload_bucket = state["upload_bucket"]
        stack.media_bucket = state["media_bucket"]
        stack.functions_source = Path(state["functions_source"])
        stack.external_firestore = state["external_firestore"]
        stack.external_firestore_resettable = state.get("external_firestore_resettable", False)
        stack.ports = {k: int(v) for k, v in state["ports"].items()}
        stack.processes = {
            name: ProcessRecord(**record) for name, record in state["processes"].items()
        }
        return stack


def _absolute(path: str | Path) -> Path:
    path = Path(path)
    return path if path.is_absolute() else ROOT / path


def _venv_bin(venv: str, program: str) -> Path:
    path = ROOT / venv / "bin" / program
    if not path.exists():
        raise StackError(f"{path} is missing; run scripts/bootstrap")
    return path


def _pythonpath() -> str:
    # The functions and the bridge import shared/ and infra/ from the repository root.
    existing = os.environ.get("PYTHONPATH")
    return f"{ROOT}{os.pathsep}{existing}" if existing else str(ROOT)


# ---------------------------------------------------------------------------------------------
# Command line


def _summary(stack: LocalStack) -> Iterator[str]:
    yield f"  firestore  {stack.firestore_host}" + (
        "  (external)" if stack.external_firestore else ""
    )
    yield f"  storage    {stack.storage_url}"
    yield f"  tasks      {stack.tasks_host}  queues: {', '.join(QUEUES)}"
    if stack.functions_running:
        yield f"  api        {stack.api_url}"
        yield f"  on_upload  {stack.on_upload_url}  (bridge watching gs://{stack.upload_bucket})"
        yield f"  sweep      every {stack.settings.local.sweep_interval_s:g}s (scheduler)"
    yield f"  logs       {stack.logs_dir}/"
    yield '  shell      eval "$(.venv/bin/python -m infra.local.stack env)"'


def _running(state_dir: str | None) -> LocalStack | None:
    stack = LocalStack.load(state_dir)
    if stack is not None and not stack.is_running:
        # Something died (or the machine restarted): clear what is left so `up` starts clean.
        print("local stack: found a partly stopped stack; stopping what is left", file=sys.stderr)
        stack.stop()
        return None
    return stack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.local.stack", description=__doc__)
    parser.add_argument("--state-dir", help="default: FRAMEFORK_LOCAL__STATE_DIR or .local")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start the stack in the background")
    up.add_argument("--emulators-only", action="store_true")
    up.add_argument("--functions-source", help="default: FRAMEFORK_FUNCTIONS_SOURCE")
    commands.add_parser("down", help="stop every process of the stack")
    commands.add_parser("status", help="what runs; exit 1 unless all of it is healthy")
    commands.add_parser("env", help="print `export` lines for a shell")
    commands.add_parser("reset", help="empty Firestore, Storage and the queues")
    args = parser.parse_args(argv)

    try:
        if args.command == "up":
            stack = _running(args.state_dir)
            if stack is not None:
                if args.emulators_only or stack.functions_running:
                    print("local stack: already up")
                    print("\n".join(_summary(stack)))
                    return 0
                if args.functions_source:
                    stack.functions_source = _absolute(args.functions_source)
                print("local stack: emulators already up; starting the functions")
                stack.start_functions()
            else:
                stack = LocalStack(args.state_dir, functions_source=args.functions_source)
                stack.start(functions=not args.emulators_only)
            print("local stack: up")
            print("\n".join(_summary(stack)))
        elif args.command == "down":
            stack = LocalStack.load(args.state_dir)
            if stack is None:
                print("local stack: not running")
            else:
                stack.stop()
                print("local stack: stopped")
        elif args.command == "status":
            stack = LocalStack.load(args.state_dir)
            if stack is None:
                print("local stack: down")
                return 1
            report = stack.status()
            for name, entry in report.items():
                state = "healthy" if entry["healthy"] else "running" if entry["running"] else "dead"
                port = entry["port"] or "-"
                print(f"  {name:<10} {state:<8} pid {entry['pid']:<8} port {port}")
            return 0 if all(e["healthy"] for e in report.values()) else 1
        elif args.command == "env":
            stack = LocalStack.load(args.state_dir)
            if stack is None:
                print("local stack: down; start it with `up`", file=sys.stderr)
                return 1
            for key, value in stack.env.items():
                print(f"export {key}={_shell_quote(value)}")
        elif args.command == "reset":
            stack = LocalStack.load(args.state_dir)
            if stack is None:
                print("local stack: down", file=sys.stderr)
                return 1
            stack.reset(firestore=stack.can_reset_firestore)
            print("local stack: reset" + ("" if stack.can_reset_firestore else " (not Firestore)"))
    except StackError as exc:
        print(f"local stack: {exc}", file=sys.stderr)
        return 1
    return 0


def _shell_quote(value: str) -> str:
    import shlex

    return shlex.quote(value)


if __name__ == "__main__":
    sys.exit(main())
