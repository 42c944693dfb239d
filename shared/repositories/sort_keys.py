"""Derived, unique sort keys for manifest lists, and the cursors that page through them.

Keyset pagination needs a total order. Each sort field gets a string key "<value>\\x1f<id>":
ties in the value are broken by the id, so one range filter on the key pages exactly. This also
works on emulators that ignore start_after. Names cannot hold control characters (validated),
so \\x1f sorts below any character of a name and "Ann" comes before "Ann B".
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime

from shared.errors import BadRequest
from shared.models.manifests import Manifest, ManifestListQuery, ManifestSort, SortOrder

SEPARATOR = "\x1f"
SORT_KEY_FIELDS: dict[ManifestSort, str] = {sort: f"sort_{sort.value}" for sort in ManifestSort}


def _timestamp(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _number(value: int) -> str:
    return f"{max(value, 0):015d}"


def sort_keys(manifest: Manifest) -> dict[str, str]:
    raw = {
        ManifestSort.updated_at: _timestamp(manifest.updated_at),
        ManifestSort.created_at: _timestamp(manifest.created_at),
        ManifestSort.name: manifest.name.casefold(),
        ManifestSort.times_used: _number(manifest.times_used),
        ManifestSort.asset_count: _number(manifest.asset_count),
    }
    return {
        SORT_KEY_FIELDS[sort]: f"{value}{SEPARATOR}{manifest.id}" for sort, value in raw.items()
    }


def _query_shape(query: ManifestListQuery) -> list[str | None]:
    return [
        query.sort.value,
        query.effective_order.value,
        query.category.value if query.category else None,
        query.status.value if query.status else None,
    ]


def encode_cursor(query: ManifestListQuery, last_key: str) -> str:
    payload = json.dumps({"q": _query_shape(query), "k": last_key}, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_cursor(query: ManifestListQuery) -> str | None:
    """The sort key to continue after, or None for the first page."""
    if query.cursor is None:
        return None
    try:
        padded = query.cursor + "=" * (-len(query.cursor) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode()))
        key, shape = payload["k"], payload["q"]
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
        raise BadRequest("the cursor is not one this API issued") from error
    if not isinstance(key, str) or shape != _query_shape(query):
        raise BadRequest(
            "the cursor belongs to a different listing: keep sort, order and filters "
            "the same while paging"
        )
    return key


def is_descending(query: ManifestListQuery) -> bool:
    return query.effective_order is SortOrder.desc
