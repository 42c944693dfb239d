"""The api function's request lines against the emulators: one per request, with its route,
status and the ids its path names."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from shared import logs


def test_each_api_request_writes_one_line_with_its_route_status_and_ids(
    api: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    manifest = api.manifest()
    api.ok("GET", f"/manifests/{manifest['id']}")

    lines = [r for r in caplog.records if r.name == "framefork.functions.requests"]
    entries = [json.loads(logs.CloudLoggingFormatter().format(r)) for r in lines]
    assert [(e["route"], e["httpRequest"]["status"]) for e in entries] == [
        ("/manifests", 201),
        ("/manifests/<manifest_id>", 200),
    ]
    assert entries[1]["manifest_id"] == manifest["id"]
    assert entries[1]["httpRequest"]["requestUrl"].endswith(f"/manifests/{manifest['id']}")
