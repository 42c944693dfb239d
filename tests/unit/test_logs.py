"""Log lines (shared/logs.py): Cloud Logging's structured JSON, text locally, and the API's
one request line per request."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from shared import logs

TRACE_ID = "105445aa7843bc8bf206b12000100000"


@pytest.fixture(autouse=True)
def _fresh_format(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(logs.FORMAT_ENV, raising=False)
    logs.reset()
    yield
    logs.reset()


def _record(message: str = "it failed", level: int = logging.ERROR, **extra: Any) -> Any:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("framefork.test").makeRecord(
            "framefork.test", level, __file__, 1, message, (), sys.exc_info(), extra=extra
        )
    return record


def test_a_record_with_an_exception_is_one_json_line_with_the_traceback_in_its_message() -> None:
    line = logs.CloudLoggingFormatter().format(_record())

    assert "\n" not in line
    entry = json.loads(line)
    assert entry["severity"] == "ERROR"
    assert entry["message"].startswith("it failed\nTraceback (most recent call last):")
    assert "ValueError: boom" in entry["message"]
    assert entry["logger"] == "framefork.test"
    assert entry["logging.googleapis.com/sourceLocation"]["line"] == "1"


@pytest.mark.parametrize(
    ("level", "severity"),
    [(logging.DEBUG, "DEBUG"), (logging.INFO, "INFO"), (logging.WARNING, "WARNING"),
     (logging.CRITICAL, "CRITICAL")],
)  # fmt: skip
def test_levels_become_cloud_logging_severities(level: int, severity: str) -> None:
    record = logging.makeLogRecord({"levelno": level, "levelname": "x", "msg": "m"})
    assert json.loads(logs.CloudLoggingFormatter().format(record))["severity"] == severity


def test_the_trace_header_becomes_the_trace_span_and_sampling_fields() -> None:
    fields = logs.trace_fields(f"{TRACE_ID}/1;o=1", "framefork-prod")

    assert fields == {
        "logging.googleapis.com/trace": f"projects/framefork-prod/traces/{TRACE_ID}",
        "logging.googleapis.com/spanId": "0000000000000001",
        "logging.googleapis.com/trace_sampled": True,
    }
    assert logs.trace_fields(TRACE_ID, "p") == {
        "logging.googleapis.com/trace": f"projects/p/traces/{TRACE_ID}"
    }


@pytest.mark.parametrize("header", [None, "", "not-a-trace", f"{TRACE_ID}/x", "abc/1;o=1"])
def test_a_missing_or_malformed_trace_header_adds_nothing(header: str | None) -> None:
    assert logs.trace_fields(header, "p") == {}


def test_bound_ids_and_extra_ids_reach_the_line_and_leave_with_the_block() -> None:
    formatter = logs.CloudLoggingFormatter()
    trace = logs.trace_fields(TRACE_ID, "p")
    with logs.log_context(project_id="p1", stage="clips", scene=None, **trace):
        with logs.log_context(scene=2):
            entry = json.loads(formatter.format(_record(job_id="j1")))
        outer = json.loads(formatter.format(_record()))
    after = json.loads(formatter.format(_record()))

    assert entry["project_id"] == "p1"
    assert entry["stage"] == "clips"
    assert entry["scene"] == 2
    assert entry["job_id"] == "j1"
    assert entry["logging.googleapis.com/trace"] == f"projects/p/traces/{TRACE_ID}"
    assert "scene" not in outer
    assert "project_id" not in after
    assert "logging.googleapis.com/trace" not in after


def test_text_lines_keep_the_usual_shape_with_the_ids_on_the_first_line() -> None:
    with logs.log_context(manifest_id="m1"):
        text = logs.TextFormatter().format(_record())

    first, _, rest = text.partition("\n")
    assert first.endswith("ERROR framefork.test: it failed [manifest_id=m1]")
    assert rest.startswith("Traceback")


def test_the_format_is_read_lazily_and_json_unless_text(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    handler = logs.handler(stream)  # made before the environment says anything
    monkeypatch.setenv(logs.FORMAT_ENV, "text")
    handler.emit(_record("one"))
    assert stream.getvalue().split("\n")[0].endswith("ERROR framefork.test: one")

    logs.reset()
    monkeypatch.setenv(logs.FORMAT_ENV, "json")
    stream.truncate(0)
    stream.seek(0)
    handler.emit(_record("two"))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["message"].startswith("two\n")


def test_a_request_line_carries_http_request_and_the_route() -> None:
    stream = io.StringIO()
    log = logging.getLogger("framefork.test.requests")
    log.addHandler(logging.StreamHandler(stream))
    log.handlers[-1].setFormatter(logs.CloudLoggingFormatter())
    try:
        logs.request_line(
            log, method="GET", route="/manifests/<manifest_id>", url="http://x/manifests/a",
            status=404, latency_s=0.0125, user_agent="ua", response_size=10,
        )  # fmt: skip
    finally:
        log.handlers.clear()
    entry = json.loads(stream.getvalue())

    assert entry["severity"] == "WARNING"
    assert entry["route"] == "/manifests/<manifest_id>"
    assert entry["httpRequest"] == {
        "requestMethod": "GET",
        "requestUrl": "http://x/manifests/a",
        "status": 404,
        "latency": "0.012500s",
        "userAgent": "ua",
        "responseSize": "10",
    }


@pytest.fixture(scope="module")
def api_client() -> Any:
    from functions_framework import create_app

    return create_app("api", "functions/main.py").test_client()


def _request_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "framefork.functions.requests"]


def test_an_api_request_writes_exactly_one_request_line_with_its_route_and_status(
    api_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Through functions-framework's own app: a path id of the wrong shape is answered 404
    before any read, so this needs no emulators."""
    caplog.set_level(logging.INFO)
    response = api_client.get(
        "/manifests/not-an-id", headers={"X-Cloud-Trace-Context": f"{TRACE_ID}/7;o=1"}
    )
    assert response.status_code == 404

    (line,) = _request_lines(caplog)
    assert line.__dict__["route"] == "/manifests/<manifest_id>"  # the rule, not the path
    assert line.__dict__["httpRequest"]["status"] == 404
    assert line.__dict__["httpRequest"]["requestMethod"] == "GET"
    entry = json.loads(logs.CloudLoggingFormatter().format(line))
    assert entry["logging.googleapis.com/trace"].endswith(f"/traces/{TRACE_ID}")
    assert "manifest_id" not in entry  # an id of a shape this API never issues names nothing


def test_an_unrouted_request_still_writes_one_line(
    api_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    assert api_client.get("/healthz").status_code == 200
    assert api_client.delete("/healthz").status_code == 405
    assert api_client.get("/no/such/thing").status_code == 404

    lines = _request_lines(caplog)
    assert [(r.__dict__["route"], r.__dict__["httpRequest"]["status"]) for r in lines] == [
        ("/healthz", 200),
        ("(no route)", 405),
        ("(no route)", 404),
    ]
