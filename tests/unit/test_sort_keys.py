from datetime import UTC, datetime

import pytest

from shared.errors import BadRequest
from shared.models.manifests import Manifest, ManifestListQuery, ManifestSort
from shared.repositories.sort_keys import decode_cursor, encode_cursor, sort_keys


def manifest(id_: str, name: str, times_used: int = 0) -> Manifest:
    at = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    return Manifest(
        id=id_, owner_id="u", name=name, times_used=times_used, created_at=at, updated_at=at
    )


def test_name_keys_sort_case_insensitively_with_shorter_names_first() -> None:
    names = ["ann b", "Ann", "bob", "ANNA"]
    keys = sorted(names, key=lambda n: sort_keys(manifest("x", n))["sort_name"])
    assert keys == ["Ann", "ann b", "ANNA", "bob"]


def test_equal_values_still_get_distinct_ordered_keys() -> None:
    a = sort_keys(manifest("aaa", "same", times_used=3))["sort_times_used"]
    b = sort_keys(manifest("bbb", "same", times_used=3))["sort_times_used"]
    assert a != b
    assert a < b


def test_numbers_sort_numerically_not_lexically() -> None:
    nine = sort_keys(manifest("x", "n", times_used=9))["sort_times_used"]
    ten = sort_keys(manifest("x", "n", times_used=10))["sort_times_used"]
    assert nine < ten


def test_a_cursor_round_trips_for_the_same_listing() -> None:
    query = ManifestListQuery(sort=ManifestSort.name)
    cursor = encode_cursor(query, "key\x1fid")
    assert decode_cursor(ManifestListQuery(sort=ManifestSort.name, cursor=cursor)) == "key\x1fid"


def test_a_cursor_from_another_sort_is_refused() -> None:
    cursor = encode_cursor(ManifestListQuery(sort=ManifestSort.name), "k")
    with pytest.raises(BadRequest, match="different listing"):
        decode_cursor(ManifestListQuery(sort=ManifestSort.created_at, cursor=cursor))


@pytest.mark.parametrize("garbage", ["!!!", "bm90IGpzb24", "e30"])
def test_a_forged_cursor_is_a_bad_request(garbage: str) -> None:
    with pytest.raises(BadRequest):
        decode_cursor(ManifestListQuery(cursor=garbage))
