"""The API's route table and the application that serves it."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from functions.api import assets, checkpoints, faces, forks, manifests, processing, projects
from functions.api.openapi import build_openapi
from functions.http import Call, JsonApi, Reply, Route
from functions.services import services
from shared.models.views import Health
from shared.settings import get_settings

API_TITLE = "Framefork API"
API_VERSION = "0.1.0"


def health(call: Call) -> Health:
    return Health(status="ok")


def openapi(call: Call) -> Reply:
    return Reply(200, openapi_document())


ROUTES: list[Route] = [
    Route("GET", "/healthz", health, "Liveness", response=Health, tag="meta",
          authenticated=False),
    Route("GET", "/openapi.json", openapi, "This API's OpenAPI document", tag="meta",
          authenticated=False),
    *manifests.ROUTES,
    *assets.ROUTES,
    *faces.ROUTES,
    *processing.ROUTES,
    *projects.ROUTES,
    *checkpoints.ROUTES,
    *forks.ROUTES,
]  # fmt: skip


@lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    development = get_settings().auth.mode == "development"
    return build_openapi(ROUTES, API_TITLE, API_VERSION, auth_optional=development)


@lru_cache(maxsize=1)
def api_app() -> JsonApi:
    return JsonApi(ROUTES, get_settings().api, lambda: services().verifier)
