"""The local stack itself: emulators reachable and resettable, tasks and storage events delivered
the way Google Cloud delivers them, and nothing left running after `down`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.cloud import (  # type: ignore[attr-defined]
    firestore,
    storage,
    tasks_v2,
)
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport
from google.oauth2 import service_account

from infra.local.stack import (
    ROOT,
    LocalStack,
    ResetUnavailable,
    _group_members,
    _tagged,
    free_port,
    port_is_free,
)

pytestmark = pytest.mark.timeout(60)


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


class Recorder:
    """A loopback HTTP server that records every request and answers with `status(n)`."""

    def __init__(self, status: Callable[[int], int] = lambda n: 200) -> None:
        self.requests: list[dict[str, Any]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                recorder.requests.append(
                    # self.headers looks names up case-insensitively, as HTTP does.
                    {"path": self.path, "headers": self.headers, "body": body}
                )
                self.send_response(status(len(recorder.requests)))
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    yield server
    server.close()


def tasks_client(stack: LocalStack) -> tasks_v2.CloudTasksClient:
    channel = grpc.insecure_channel(stack.tasks_host)
    return tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))


def http_task(url: str, body: bytes) -> tasks_v2.Task:
    return tasks_v2.Task(
        http_request=tasks_v2.HttpRequest(
            url=url,
            http_method=tasks_v2.HttpMethod.POST,
            headers={"content-type": "application/json"},
            body=body,
        )
    )


def test_environment_points_clients_and_settings_at_the_emulators(emulators: LocalStack) -> None:
    from shared.settings import get_settings

    for key, value in emulators.env.items():
        assert os.environ[key] == value
    settings = get_settings()
    assert settings.project_id == emulators.project_id
    assert settings.storage.upload_bucket == emulators.upload_bucket
    assert settings.storage.media_bucket == emulators.media_bucket
    assert settings.storage.signer_key_file == str(emulators.signer_key_file)
    signer = service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
        emulators.signer_key_file
    )
    assert signer.sign_bytes(b"payload")


def test_every_emulator_listens_on_loopback_only(emulators: LocalStack) -> None:
    listening: dict[int, set[str]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A":  # LISTEN
                address, port_hex = local.split(":")
                listening.setdefault(int(port_hex, 16), set()).add(address)
    loopback = {
        "0100007F",  # 127.0.0.1
        "00000000000000000000000001000000",  # ::1
        "0000000000000000FFFF00000100007F",  # ::ffff:127.0.0.1
    }
    for name, port in emulators.ports.items():
        assert port in listening, f"{name} does not listen on {port}"
        assert listening[port] <= loopback, f"{name} listens on {listening[port]}"


def test_reset_empties_firestore_and_storage(clean_emulators: LocalStack) -> None:
    db = firestore.Client(project=clean_emulators.project_id)
    db.collection("manifests").document("m1").set({"name": "kept until reset"})
    gcs = storage.Client(project=clean_emulators.project_id)
    gcs.bucket(clean_emulators.upload_bucket).blob("a.png").upload_from_string(b"bytes")
    assert db.collection("manifests").document("m1").get().exists

    clean_emulators.reset()

    assert not db.collection("manifests").document("m1").get().exists
    assert list(db.collection("manifests").stream()) == []
    for bucket in (clean_emulators.upload_bucket, clean_emulators.media_bucket):
        assert gcs.bucket(bucket).exists()
        assert list(gcs.list_blobs(bucket)) == []


def test_tasks_emulator_delivers_an_http_task_to_a_loopback_server(
    clean_emulators: LocalStack, recorder: Recorder
) -> None:
    queue = clean_emulators.queue_path("pipeline")
    tasks_client(clean_emulators).create_task(
        parent=queue, task=http_task(f"{recorder.url}/run_stage", b'{"stage": "storyboard"}')
    )

    assert wait_until(lambda: len(recorder.requests) == 1)
    delivered = recorder.requests[0]
    assert delivered["path"] == "/run_stage"
    assert delivered["body"] == b'{"stage": "storyboard"}'
    assert delivered["headers"]["X-CloudTasks-QueueName"] == queue
    assert delivered["headers"]["X-CloudTasks-TaskName"]
    assert delivered["headers"]["X-CloudTasks-TaskRetryCount"] == "0"


def test_tasks_emulator_gives_up_after_the_configured_number_of_retries(
    clean_emulators: LocalStack,
) -> None:
    failing = Recorder(status=lambda n: 503)
    try:
        tasks_client(clean_emulators).create_task(
            parent=clean_emulators.queue_path("manifesting"),
            task=http_task(f"{failing.url}/job", b"{}"),
        )
        attempts = clean_emulators.settings.local.tasks_max_retries + 1
        assert wait_until(lambda: len(failing.requests) >= attempts)
        time.sleep(1.0)  # the emulator retries every 0.1 s: one more would have come by now
        retry_counts = [r["headers"]["X-CloudTasks-TaskRetryCount"] for r in failing.requests]
        assert retry_counts == [str(n) for n in range(attempts)]
    finally:
        failing.close()


@pytest.fixture
def bridge_to(clean_emulators: LocalStack) -> Iterator[Callable[[str, str], None]]:
    """Starts the event bridge on a bucket of the test's own, posting to a given URL."""
    started: list[subprocess.Popen[bytes]] = []

    def start(bucket: str, target: str) -> None:
        started.append(
            subprocess.Popen(
                [
                    *(sys.executable, "-m", "infra.local.event_bridge"),
                    *("--bucket", bucket, "--target", target, "--interval", "0.1"),
                ],
                cwd=ROOT,
                env={**os.environ, **clean_emulators.env},
            )
        )

    yield start
    for process in started:
        process.terminate()
        process.wait(timeout=10)


def test_event_bridge_posts_a_finalized_cloudevent_for_each_new_object(
    clean_emulators: LocalStack, recorder: Recorder, bridge_to: Callable[[str, str], None]
) -> None:
    gcs = storage.Client(project=clean_emulators.project_id)
    bucket = gcs.create_bucket("bridge-test")
    before = bucket.blob("before/start.png")
    before.upload_from_string(b"already there", content_type="image/png")

    bridge_to("bridge-test", f"{recorder.url}/")
    after = bucket.blob("manifests/m1/uploads/a1.jpg")
    after.upload_from_string(b"\xff\xd8 new upload", content_type="image/jpeg")

    assert wait_until(lambda: len(recorder.requests) == 2)
    events = {r["headers"]["ce-subject"]: r for r in recorder.requests}
    assert set(events) == {"objects/before/start.png", "objects/manifests/m1/uploads/a1.jpg"}
    event = events["objects/manifests/m1/uploads/a1.jpg"]
    headers = event["headers"]
    assert headers["ce-type"] == "google.cloud.storage.object.v1.finalized"
    assert headers["ce-source"] == "//storage.googleapis.com/projects/_/buckets/bridge-test"
    assert headers["ce-specversion"] == "1.0"
    assert headers["ce-id"] and headers["ce-time"]
    assert headers["Content-Type"] == "application/json"
    data = json.loads(event["body"])
    after.reload()
    assert data["kind"] == "storage#object"
    assert data["bucket"] == "bridge-test"
    assert data["name"] == "manifests/m1/uploads/a1.jpg"
    assert data["generation"] == str(after.generation)
    assert data["size"] == str(len(b"\xff\xd8 new upload"))
    assert data["contentType"] == "image/jpeg"
    assert data["md5Hash"] == after.md5_hash
    assert data["crc32c"] == after.crc32c
    assert data["timeCreated"] and data["updated"]
    time.sleep(0.5)
    assert len(recorder.requests) == 2, "an unchanged object is delivered once"


def test_event_bridge_retries_a_failed_delivery_with_the_same_event_id(
    clean_emulators: LocalStack, bridge_to: Callable[[str, str], None]
) -> None:
    flaky = Recorder(status=lambda n: 500 if n == 1 else 204)
    try:
        gcs = storage.Client(project=clean_emulators.project_id)
        gcs.create_bucket("bridge-retry").blob("x.png").upload_from_string(b"x")
        bridge_to("bridge-retry", f"{flaky.url}/")

        assert wait_until(lambda: len(flaky.requests) == 2)
        first, second = (r["headers"]["ce-id"] for r in flaky.requests)
        assert first == second
    finally:
        flaky.close()


def test_a_firestore_from_the_environment_is_used_and_never_reset(
    emulators: LocalStack, tmp_path: Path
) -> None:
    # The session's Firestore stands in for an official emulator named by FIRESTORE_EMULATOR_HOST.
    assert os.environ["FIRESTORE_EMULATOR_HOST"] == emulators.firestore_host
    with LocalStack(tmp_path, die_with_parent=True) as other:
        other.start(functions=False)
        assert other.external_firestore == emulators.firestore_host
        assert "firestore" not in other.processes
        assert not other.can_reset_firestore
        with pytest.raises(ResetUnavailable):
            other.reset()
        other.reset(firestore=False)


def test_up_is_safe_twice_and_down_leaves_no_process_behind(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_EMULATOR_HOST")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "infra.local.stack", "--state-dir", str(tmp_path), *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    try:
        assert cli("up", "--emulators-only").returncode == 0
        again = cli("up", "--emulators-only")
        assert again.returncode == 0 and "already up" in again.stdout
        assert cli("status").returncode == 0
        exports = cli("env").stdout
        assert "export FIRESTORE_EMULATOR_HOST=127.0.0.1:" in exports
        state = json.loads((tmp_path / "stack.json").read_text())
        pids = [record["pid"] for record in state["processes"].values()]
        assert len(pids) == 3
    finally:
        down = cli("down")
    assert down.returncode == 0
    assert all(_group_members(pid) == [] for pid in pids)
    assert not (tmp_path / "stack.json").exists()
    assert cli("status").returncode == 1


# Stands in for `bentoml serve`: the parent opens the listening socket and forks a worker that
# inherits it and calls setsid, as BentoML's (circus's) worker does, out of the parent's group.
_ARBITER_AND_WORKER = """
import os, socket, sys, time
listener = socket.socket()
listener.bind(("127.0.0.1", int(sys.argv[1])))
listener.listen()
if os.fork() == 0:
    os.setsid()
    print("worker", os.getpid(), flush=True)
time.sleep(120)
"""


def test_stop_ends_a_worker_that_left_the_group_and_outlived_its_parent(tmp_path: Path) -> None:
    # Fast and without the stack: one process started the way start_functions starts models.
    stack = LocalStack(tmp_path, die_with_parent=True)
    port = free_port()
    stack._spawn("models", [sys.executable, "-c", _ARBITER_AND_WORKER, str(port)])
    record = stack.processes["models"]
    log = Path(record.log)
    try:
        assert wait_until(lambda: "worker" in log.read_text())
        worker = int(log.read_text().split()[1])
        assert worker not in _group_members(record.pid)
        # The parent dies (killed with its group, as a stop or a failed start did before): the
        # worker lives on and holds the port, so starting the service again could not bind it.
        os.killpg(record.pid, 9)
        assert wait_until(lambda: _group_members(record.pid) == [])
        assert _tagged(record.tag) == [worker]
        assert not port_is_free(port)

        stack.stop(grace_s=2.0)

        assert wait_until(lambda: port_is_free(port), timeout=3)
        assert _tagged(record.tag) == []
    finally:
        for pid in _tagged(record.tag):
            os.kill(pid, 9)
