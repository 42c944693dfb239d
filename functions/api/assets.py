"""Asset routes: create, list, get, update, delete, upload, and image redirects."""

from __future__ import annotations

from werkzeug.exceptions import RequestEntityTooLarge

from functions.api.media import media_redirect
from functions.http import Call, Reply, Route
from functions.services import services
from shared.errors import (
    BadRequest,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
    UploadRejected,
)
from shared.models.assets import AssetCreate, AssetUpdate, UploadUrlRequest
from shared.models.views import AssetList, AssetView, UploadResult, UploadTicketView


def _ids(call: Call) -> tuple[str, str]:
    return call.path["manifest_id"], call.path["asset_id"]


def create(call: Call) -> AssetView:
    return AssetView.of(
        services().registry.create_asset(call.identity, call.path["manifest_id"], call.body)
    )


def list_(call: Call) -> AssetList:
    found = services().registry.get_manifest(call.identity, call.path["manifest_id"])
    return AssetList(items=[AssetView.of(a) for a in found.assets])


def get(call: Call) -> AssetView:
    return AssetView.of(services().registry.owned_asset(call.identity, *_ids(call)))


def update(call: Call) -> AssetView:
    return AssetView.of(services().registry.update_asset(call.identity, *_ids(call), call.body))


def delete(call: Call) -> Reply:
    services().registry.delete_asset(call.identity, *_ids(call))
    return Reply(204)


def upload_url(call: Call) -> UploadTicketView:
    ticket = services().uploads.signed_upload(call.identity, *_ids(call), call.body)
    return UploadTicketView(
        url=ticket.url,
        method=ticket.method,
        headers=ticket.headers,
        object_name=ticket.object_name,
        expires_at=ticket.expires_at,
    )


def upload(call: Call) -> UploadResult:
    """multipart/form-data with one part named `file`."""
    request = call.request
    limit = services().settings.storage.max_upload_bytes
    if request.mimetype != "multipart/form-data":
        raise UnsupportedMediaType("send the image as multipart/form-data with a part named 'file'")
    request.max_content_length = limit + 64 * 1024  # the image plus the multipart framing
    try:
        part = request.files.get("file")
    except RequestEntityTooLarge as error:
        raise PayloadTooLarge(f"the upload is larger than {limit} bytes") from error
    if part is None:
        raise BadRequest("the form has no part named 'file'")
    data = part.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"the image is larger than {limit} bytes")
    content_type = part.mimetype or "application/octet-stream"
    outcome = services().uploads.direct_upload(call.identity, *_ids(call), data, content_type)
    if outcome.status == "rejected":
        # Recorded on the asset (upload state failed, with the reason) and answered in the
        # one error shape, like every other 4xx.
        raise UploadRejected(
            f"the upload was rejected: {outcome.detail}",
            details=[{"outcome": outcome.status, "detail": outcome.detail}],
        )
    return UploadResult(
        outcome=outcome.status,
        detail=outcome.detail,
        asset=AssetView.of(outcome.asset) if outcome.asset else None,
    )


def _redirect(call: Call, thumbnail: bool) -> Reply:
    asset = services().registry.owned_asset(call.identity, *_ids(call))
    if asset.image is None:
        raise NotFound(f"asset {asset.id} has no image yet")
    return media_redirect(
        asset.image.thumbnail_object_name if thumbnail else asset.image.object_name
    )


def image(call: Call) -> Reply:
    return _redirect(call, thumbnail=False)


def thumbnail(call: Call) -> Reply:
    return _redirect(call, thumbnail=True)


ALL = "/manifests/<manifest_id>/assets"
ONE = f"{ALL}/<asset_id>"
ROUTES = [
    Route("POST", ALL, create, "Add an asset; it gets the next tag of its type", 201,
          AssetCreate, response=AssetView, tag="assets", errors=(400, 404, 413, 415, 422)),
    Route("GET", ALL, list_, "List a manifest's assets in display order",
          response=AssetList, tag="assets", errors=(404,)),
    Route("GET", ONE, get, "Get an asset", response=AssetView, tag="assets", errors=(404,)),
    Route("PATCH", ONE, update, "Change an asset; a new type issues a new tag",
          body=AssetUpdate, response=AssetView, tag="assets", errors=(400, 404, 413, 415, 422)),
    Route("DELETE", ONE, delete, "Delete an asset and the crops extracted from it", 204,
          tag="assets", errors=(404,)),
    Route("POST", f"{ONE}/upload-url", upload_url,
          "Get a signed URL to PUT the asset's image straight into storage", 201,
          UploadUrlRequest, response=UploadTicketView, tag="uploads",
          errors=(400, 404, 409, 413, 415, 422)),
    Route("POST", f"{ONE}/upload", upload,
          "Upload the asset's image in the request (multipart/form-data, part 'file')",
          response=UploadResult, tag="uploads", raw_body="multipart/form-data",
          errors=(400, 404, 409, 413, 415, 422)),
    Route("GET", f"{ONE}/image", image, "Redirect to a short-lived URL of the image", 302,
          tag="uploads", errors=(404,)),
    Route("GET", f"{ONE}/thumbnail", thumbnail, "Redirect to a short-lived URL of the thumbnail",
          302, tag="uploads", errors=(404,)),
]  # fmt: skip
