"""The Cloud Tasks target of the model service: every answer is one Cloud Tasks can act on."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from model_service import factory
from model_service.tasks_app import tasks_app
from shared.clients import firestore_client
from shared.manifesting.engine import RunOutcome


class ScriptedEngine:
    def __init__(self, outcome: RunOutcome) -> None:
        self.outcome = outcome
        self.jobs: list[str] = []

    def run(self, job_id: str) -> RunOutcome:
        self.jobs.append(job_id)
        return self.outcome


@pytest.fixture
def client(clean_emulators: Any) -> TestClient:
    return TestClient(tasks_app)


def use_engine(monkeypatch: pytest.MonkeyPatch, outcome: RunOutcome) -> ScriptedEngine:
    engine = ScriptedEngine(outcome)
    monkeypatch.setattr(factory, "engine", lambda: engine)
    return engine


@pytest.mark.parametrize(
    "body", [b"not json", b'{"job_id": 5}', b'{"job": "x"}', b'{"job_id": "a/b"}']
)
def test_a_payload_that_can_never_work_is_recorded_and_acknowledged(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, body: bytes
) -> None:
    engine = use_engine(monkeypatch, RunOutcome.DONE)
    response = client.post("/run_job", content=body, headers={"X-CloudTasks-TaskName": "t-1"})
    assert response.status_code == 200
    assert response.json()["outcome"] == "rejected"
    assert engine.jobs == []
    [recorded] = [d.to_dict() for d in firestore_client().collection("bad_tasks").stream()]
    assert recorded["task_name"] == "t-1"
    assert recorded["body"] == body.decode("utf-8", "replace")


def test_a_job_leased_elsewhere_is_retried_later(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_engine(monkeypatch, RunOutcome.BUSY)
    response = client.post("/run_job", json={"job_id": "j1"})
    assert response.status_code == 409
    assert response.headers["Retry-After"]


@pytest.mark.parametrize("outcome", [RunOutcome.DONE, RunOutcome.UNKNOWN])
def test_a_finished_or_unknown_job_is_acknowledged(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, outcome: RunOutcome
) -> None:
    engine = use_engine(monkeypatch, outcome)
    response = client.post("/run_job", json={"job_id": "j1"})
    assert response.status_code == 200
    assert response.json() == {"outcome": outcome.value, "job_id": "j1"}
    assert engine.jobs == ["j1"]
