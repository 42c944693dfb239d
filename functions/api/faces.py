"""Face routes: the person's links between faces, and the pairs to review."""

from __future__ import annotations

from functions.http import Call, Reply, Route
from functions.services import services
from shared.models.face_links import FaceLink, FaceLinkCreate
from shared.models.views import (
    AssetView,
    FaceLinkList,
    FaceLinkResult,
    FaceLinkView,
    FaceReview,
    FaceReviewPair,
)


def _view(link: FaceLink) -> FaceLinkView:
    return FaceLinkView.model_validate(link.model_dump())


def create(call: Call) -> FaceLinkResult | Reply:
    outcome = services().face_links.add(call.identity, call.path["manifest_id"], call.body)
    result = FaceLinkResult(link=_view(outcome.link), face_groups=outcome.groups)
    # The same link sent again is answered as it stands, not made twice.
    return result if outcome.created else Reply(200, result.model_dump(mode="json"))


def list_(call: Call) -> FaceLinkList:
    links = services().face_links.list_links(call.identity, call.path["manifest_id"])
    return FaceLinkList(items=[_view(link) for link in links])


def delete(call: Call) -> Reply:
    services().face_links.delete(call.identity, call.path["manifest_id"], call.path["link_id"])
    return Reply(204)


def review(call: Call) -> FaceReview:
    pairs = services().face_links.review(call.identity, call.path["manifest_id"])
    return FaceReview(items=[
        FaceReviewPair(asset_a=AssetView.of(p.asset_a), asset_b=AssetView.of(p.asset_b),
                       similarity=p.similarity, job_id=p.job_id, found_at=p.found_at)
        for p in pairs
    ])  # fmt: skip


LINKS = "/manifests/<manifest_id>/face-links"
ROUTES = [
    Route("POST", LINKS, create,
          "Say two assets show the same person or different people; the groups follow (201, "
          "or 200 for a link already there; 409 naming the chain it would contradict)", 201,
          FaceLinkCreate, response=FaceLinkResult, tag="faces",
          errors=(400, 404, 409, 413, 415, 422)),
    Route("GET", LINKS, list_, "List the manifest's face links", response=FaceLinkList,
          tag="faces", errors=(404,)),
    Route("DELETE", f"{LINKS}/<link_id>", delete,
          "Delete a face link; the groups follow", 204, tag="faces", errors=(404, 409)),
    Route("GET", "/manifests/<manifest_id>/face-review", review,
          "Pairs of faces the latest runs found nearly alike and kept apart, newest first",
          response=FaceReview, tag="faces", errors=(404,)),
]  # fmt: skip
