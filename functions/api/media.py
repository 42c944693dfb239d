"""Images are served by redirect to short-lived signed URLs: the API never streams bytes."""

from __future__ import annotations

from functions.http import Reply
from functions.services import services


def media_redirect(object_name: str) -> Reply:
    settings = services().settings.storage
    url = services().blobs.signed_get_url(settings.media_bucket, object_name)
    return Reply(302, headers={"Location": url, "Cache-Control": "private, max-age=60"})
