"""The retry and timeout every call to a Google service carries, from one setting.

The clients' defaults retry a call for a minute or more while a service is down, so an API
request would hang for minutes. Each call here passes the clients' own `retry` and `timeout`
options instead: transient errors are retried with backoff, and the whole call, retries
included, ends within `dependencies.deadline_s`. A call that runs out raises the client's
own error (DeadlineExceeded, RetryError, ServiceUnavailable, a connection error), one of
UNAVAILABLE_ERRORS, which the HTTP edge answers with 503 and Retry-After.
"""

from __future__ import annotations

from typing import Any

import requests
from google.api_core import exceptions as gexc
from google.api_core.retry import Retry, if_transient_error
from google.cloud.storage.retry import DEFAULT_RETRY as STORAGE_RETRY

from shared.settings import get_settings

UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.RetryError,
    requests.ConnectionError,
    requests.Timeout,
)
"""What a Google client raises when its service did not answer within the deadline."""


def _deadline() -> float:
    return get_settings().dependencies.deadline_s


def _backoff(deadline: float) -> Retry:
    return Retry(
        predicate=if_transient_error, initial=0.1, maximum=1.0, multiplier=2.0, timeout=deadline
    )


def grpc_call() -> dict[str, Any]:
    """For Firestore and Cloud Tasks calls (gRPC): `retry=` and `timeout=` keyword arguments."""
    deadline = _deadline()
    return {"retry": _backoff(deadline), "timeout": deadline}


def storage_call() -> dict[str, Any]:
    """For Cloud Storage calls: the library's own retry predicate, bounded; the connect
    timeout short, the read timeout (per socket read, not per object) the deadline."""
    deadline = _deadline()
    return {
        "retry": STORAGE_RETRY.with_timeout(deadline),
        "timeout": (min(deadline, 3.0), deadline),
    }
