"""Manifest routes: create, list, get with assets, update, soft delete, duplicate."""

from __future__ import annotations

from functions.api.media import media_redirect
from functions.http import Call, Reply, Route
from functions.services import services
from shared.errors import NotFound
from shared.models.manifests import (
    ManifestCreate,
    ManifestDuplicate,
    ManifestListQuery,
    ManifestUpdate,
)
from shared.models.views import AssetView, ManifestDetail, ManifestPage, ManifestView
from shared.registry import ManifestWithAssets


def detail(found: ManifestWithAssets) -> ManifestDetail:
    return ManifestDetail(
        manifest=ManifestView.of(found.manifest),
        assets=[AssetView.of(asset) for asset in found.assets],
    )


def create(call: Call) -> ManifestView:
    return ManifestView.of(services().registry.create_manifest(call.identity, call.body))


def list_(call: Call) -> ManifestPage:
    query: ManifestListQuery = call.query
    page = services().registry.list_manifests(
        call.identity, query, services().settings.api.page_size_default
    )
    return ManifestPage(
        items=[ManifestView.of(m) for m in page.items], next_cursor=page.next_cursor
    )


def get(call: Call) -> ManifestDetail:
    return detail(services().registry.get_manifest(call.identity, call.path["manifest_id"]))


def update(call: Call) -> ManifestView:
    manifest = services().registry.update_manifest(
        call.identity, call.path["manifest_id"], call.body
    )
    return ManifestView.of(manifest)


def delete(call: Call) -> Reply:
    services().registry.delete_manifest(call.identity, call.path["manifest_id"])
    return Reply(204)


def duplicate(call: Call) -> ManifestDetail:
    body = call.body or ManifestDuplicate()
    return detail(
        services().registry.duplicate_manifest(call.identity, call.path["manifest_id"], body)
    )


def contact_sheet(call: Call) -> Reply:
    manifest = services().registry.owned_manifest(call.identity, call.path["manifest_id"])
    if manifest.contact_sheet_object is None:
        raise NotFound(f"manifest {manifest.id} has no contact sheet yet; process it first")
    return media_redirect(manifest.contact_sheet_object)


ONE = "/manifests/<manifest_id>"
ROUTES = [
    Route("POST", "/manifests", create, "Create a manifest", 201, ManifestCreate,
          response=ManifestView, tag="manifests", errors=(400, 413, 415, 422)),
    Route("GET", "/manifests", list_, "List your manifests, a page at a time",
          query=ManifestListQuery, response=ManifestPage, tag="manifests", errors=(400, 422)),
    Route("GET", ONE, get, "Get a manifest with its assets", response=ManifestDetail,
          tag="manifests", errors=(404,)),
    Route("PATCH", ONE, update, "Change a manifest's name, description, category or tags",
          body=ManifestUpdate, response=ManifestView, tag="manifests",
          errors=(400, 404, 413, 415, 422)),
    Route("DELETE", ONE, delete, "Delete a manifest (refused while a live project uses it)",
          204, tag="manifests", errors=(404, 409)),
    Route("POST", f"{ONE}/duplicate", duplicate,
          "Copy a manifest and all its assets into a new draft", 201, ManifestDuplicate,
          response=ManifestDetail, tag="manifests", errors=(400, 404, 413, 415, 422),
          body_required=False),
    Route("GET", f"{ONE}/contact-sheet", contact_sheet,
          "Redirect to a short-lived URL of the numbered contact sheet", 302, tag="manifests",
          errors=(404,)),
]  # fmt: skip
