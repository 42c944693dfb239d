"""Log lines every deployable writes: Cloud Logging's structured JSON, or readable text locally.

In Google Cloud, one JSON object per line on stdout/stderr becomes one structured entry:
`severity`, `message` (with any traceback folded in, so a traceback is one entry, not dozens),
`logging.googleapis.com/trace` (which ties every line of a request to its trace), `httpRequest`
on the request line, and the ids in play (`owner_id`, `manifest_id`, `job_id`, `project_id`,
`stage`, `scene`) in the payload. `FRAMEFORK_LOG_FORMAT=text` writes the same records as plain
lines with the ids appended (the local stack sets it); anything else, or nothing, is JSON.

The ids come from a context variable that the edges bind (`log_context`) or from a call's
`extra=` (`log.info("…", extra={"job_id": job.id})`). The format is read on the first record
a handler writes, never at import time; `reset()` forgets it (tests).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal

FORMAT_ENV = "FRAMEFORK_LOG_FORMAT"
TRACE_HEADER = "X-Cloud-Trace-Context"
TRACE_KEY = "logging.googleapis.com/trace"
SPAN_KEY = "logging.googleapis.com/spanId"
SAMPLED_KEY = "logging.googleapis.com/trace_sampled"
ID_FIELDS = ("owner_id", "manifest_id", "job_id", "project_id", "stage", "scene")
"""What a line may say about the work it belongs to, in this order."""
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_SEVERITY = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARNING",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "CRITICAL",
}
_TRACE = re.compile(r"^([0-9a-fA-F]{32})(?:/([0-9]{1,20}))?(?:;o=([01]))?$")
_context: ContextVar[Mapping[str, Any]] = ContextVar(
    "framefork_log_context", default=MappingProxyType({})
)
_format: Literal["json", "text"] | None = None


def log_format() -> Literal["json", "text"]:
    """The format of this process's lines: read from the environment once, on first use."""
    global _format
    if _format is None:
        _format = "text" if os.environ.get(FORMAT_ENV, "").strip().lower() == "text" else "json"
    return _format


def reset() -> None:
    """Forget the format read (tests change the environment)."""
    global _format
    _format = None


def trace_fields(header: str | None, project: str) -> dict[str, Any]:
    """Cloud Logging's trace fields from an `X-Cloud-Trace-Context: TRACE_ID/SPAN_ID;o=1`
    header; nothing when the header is missing or malformed."""
    match = _TRACE.match((header or "").strip())
    if match is None or not project:
        return {}
    trace_id, span, sampled = match.groups()
    fields: dict[str, Any] = {TRACE_KEY: f"projects/{project}/traces/{trace_id.lower()}"}
    if span is not None and 0 < int(span) < 2**64:
        fields[SPAN_KEY] = f"{int(span):016x}"  # the header's span is decimal; Logging's hex
    if sampled is not None:
        fields[SAMPLED_KEY] = sampled == "1"
    return fields


def current() -> Mapping[str, Any]:
    """The fields bound in this context (ids and trace)."""
    return _context.get()


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Adds fields (ids, trace) to every line written inside the block; None values are
    left out, and what an outer block bound stays unless named again."""
    merged = {**_context.get(), **{k: v for k, v in fields.items() if v is not None}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """The context's fields, overridden by the record's own `extra=` ids."""
    fields = dict(_context.get())
    for name in (*ID_FIELDS, TRACE_KEY, SPAN_KEY, SAMPLED_KEY):
        value = record.__dict__.get(name)
        if value is not None:
            fields[name] = value
    return fields


class CloudLoggingFormatter(logging.Formatter):
    """One JSON object per record, in Cloud Logging's structured format."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            message = f"{message}\n{record.exc_text}"
        if record.stack_info:
            message = f"{message}\n{self.formatStack(record.stack_info)}"
        entry: dict[str, Any] = {
            "severity": _SEVERITY.get(record.levelno, record.levelname),
            "message": message,
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
            "logging.googleapis.com/sourceLocation": {
                "file": record.pathname,
                "line": str(record.lineno),
                "function": record.funcName,
            },
        }
        entry.update(_fields(record))
        for name in ("route", "latency_ms"):
            if name in record.__dict__:
                entry[name] = record.__dict__[name]
        http_request = record.__dict__.get("httpRequest")
        if http_request is not None:
            entry["httpRequest"] = http_request
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Plain lines for people: the usual format, then the ids in play in brackets."""

    def __init__(self, fmt: str = TEXT_FORMAT) -> None:
        super().__init__(fmt)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = _fields(record)
        shown = " ".join(f"{k}={ids[k]}" for k in ID_FIELDS if k in ids)
        if not shown:
            return line
        first, newline, rest = line.partition("\n")  # the ids stay on the message's own line
        return f"{first} [{shown}]{newline}{rest}"


class FrameforkFormatter(logging.Formatter):
    """Chooses JSON or text on the first record it formats (never at import time). In text
    mode a formatter given as `text` (a server's own, say) is kept."""

    def __init__(self, text: logging.Formatter | None = None) -> None:
        super().__init__()
        self._text = text or TextFormatter()
        self._json = CloudLoggingFormatter()

    def format(self, record: logging.LogRecord) -> str:
        return (self._json if log_format() == "json" else self._text).format(record)


def handler(stream: Any = None) -> logging.Handler:
    """A stream handler (stderr by default) that writes Framefork's lines."""
    made = logging.StreamHandler(stream if stream is not None else sys.stderr)
    made.setFormatter(FrameforkFormatter())
    return made


def configure(level: int = logging.INFO) -> None:
    """Makes the root logger write Framefork's lines, as `logging.basicConfig` would: only
    where nothing configured it yet (a test runner's capture stays as it is)."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(handler())
        root.setLevel(level)


def adopt(logger: logging.Logger) -> None:
    """Makes a logger that someone else configured (a server's) write JSON lines too in
    JSON mode, keeping its own formatting in text mode. Only plain stream handlers: a test
    runner's capture handlers are left alone."""
    for existing in logger.handlers:
        if type(existing) is logging.StreamHandler and not isinstance(
            existing.formatter, FrameforkFormatter
        ):
            existing.setFormatter(FrameforkFormatter(existing.formatter or logging.Formatter()))


def request_line(
    log: logging.Logger,
    *,
    method: str,
    route: str | None,
    url: str,
    status: int,
    latency_s: float,
    user_agent: str | None = None,
    remote_ip: str | None = None,
    request_size: int | None = None,
    response_size: int | None = None,
    protocol: str | None = None,
) -> None:
    """The one line for an answered request: `httpRequest` as Cloud Logging reads it, and
    the route's rule (not the raw path, which holds ids) for grouping."""
    http_request: dict[str, Any] = {
        "requestMethod": method,
        "requestUrl": url,
        "status": status,
        "latency": f"{latency_s:.6f}s",
    }
    for key, value in (
        ("userAgent", user_agent),
        ("remoteIp", remote_ip),
        ("requestSize", None if request_size is None else str(request_size)),
        ("responseSize", None if response_size is None else str(response_size)),
        ("protocol", protocol),
    ):
        if value:
            http_request[key] = value
    level = logging.ERROR if status >= 500 else logging.WARNING if status >= 400 else logging.INFO
    shown = route or "(no route)"
    log.log(
        level,
        "%s %s %s %.1fms",
        method,
        shown,
        status,
        latency_s * 1000,
        # The context goes into the record itself: a handler that formats later still has it.
        extra={
            **_context.get(),
            "httpRequest": http_request,
            "route": shown,
            "latency_ms": round(latency_s * 1000, 3),
        },
        stacklevel=2,  # the line's source is the edge that answered, not this helper
    )
