"""Properties of infra/terraform that the application relies on.

The HCL is parsed, not evaluated (Terraform and its providers are not needed): references such
as `google_storage_bucket.uploads.name` are compared as written. Where the application defines
the same facts (settings, sort keys), the tests compare both sides.
"""

from __future__ import annotations

import pathlib
import typing
from functools import cache
from typing import Any

import pytest
from pydantic import BaseModel

from shared.models.manifests import ManifestSort
from shared.repositories.sort_keys import SORT_KEY_FIELDS
from shared.settings import Settings

hcl2 = pytest.importorskip(
    "hcl2",
    reason="python-hcl2 is not installed in this environment (scripts/check_infra has its own)",
)
if not hasattr(hcl2, "load"):
    # What an uninstall leaves behind (the parser's runtime cache) imports as an empty package.
    pytest.skip("hcl2 is an empty leftover, not python-hcl2", allow_module_level=True)

TF_DIR = pathlib.Path(__file__).resolve().parents[2] / "infra" / "terraform"
API_MEMBER = "serviceAccount:${google_service_account.api.email}"
ON_UPLOAD_MEMBER = "serviceAccount:${google_service_account.on_upload.email}"


def _clean(value: Any) -> Any:
    """python-hcl2 8 keeps the quotes of string literals and adds markers (__is_block__,
    __comments__); older releases do neither. Either way, return plain values."""
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items() if not str(k).startswith("__")}
    if isinstance(value, list):
        return [_clean(item) for item in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


@cache
def _config() -> dict[str, list[Any]]:
    merged: dict[str, list[Any]] = {}
    for path in sorted(TF_DIR.glob("*.tf")):
        with path.open() as handle:
            for key, items in _clean(hcl2.load(handle)).items():
                merged.setdefault(key, []).extend(items)
    return merged


def resources(kind: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for block in _config().get("resource", []):
        found.update(block.get(kind, {}))
    return found


def locals_() -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for block in _config().get("locals", []):
        merged.update(block)
    return merged


def members(binding: dict[str, Any]) -> list[str]:
    return [binding["member"]] if "member" in binding else list(binding.get("members", []))


def test_the_upload_trigger_fires_on_finalized_objects_of_the_uploads_bucket() -> None:
    on_upload = resources("google_cloudfunctions2_function")["on_upload"]
    (trigger,) = on_upload["event_trigger"]

    assert trigger["event_type"] == "google.cloud.storage.object.v1.finalized"
    assert trigger["event_filters"] == [
        {"attribute": "bucket", "value": "${google_storage_bucket.uploads.name}"}
    ]
    assert trigger["retry_policy"] == "RETRY_POLICY_RETRY"
    assert on_upload["build_config"][0]["entry_point"] == "on_upload"
    assert on_upload["service_config"][0]["ingress_settings"] == "ALLOW_INTERNAL_ONLY"


def test_only_the_trigger_identity_may_invoke_on_upload() -> None:
    invokers = [
        binding
        for binding in resources("google_cloud_run_service_iam_member").values()
        if binding["service"] == "${google_cloudfunctions2_function.on_upload.name}"
    ]
    trigger = resources("google_cloudfunctions2_function")["on_upload"]["event_trigger"][0]

    assert [members(b) for b in invokers] == [[ON_UPLOAD_MEMBER]]
    assert trigger["service_account_email"] == "${google_service_account.on_upload.email}"


def test_the_api_is_a_public_http_function_that_authenticates_in_code() -> None:
    api = resources("google_cloudfunctions2_function")["api"]
    public = [
        binding
        for binding in resources("google_cloud_run_service_iam_member").values()
        if binding["service"] == "${google_cloudfunctions2_function.api.name}"
    ]

    assert "event_trigger" not in api
    assert api["build_config"][0]["entry_point"] == "api"
    assert api["service_config"][0]["ingress_settings"] == "ALLOW_ALL"
    assert [(b["role"], members(b)) for b in public] == [("roles/run.invoker", ["allUsers"])]
    assert locals_()["api_env"]["FRAMEFORK_AUTH__MODE"] == "firebase"


def test_every_bucket_enforces_public_access_prevention_and_uniform_access() -> None:
    buckets = resources("google_storage_bucket")

    assert {"uploads", "media"} <= buckets.keys()
    for name, bucket in buckets.items():
        assert bucket.get("public_access_prevention") == "enforced", name
        assert bucket.get("uniform_bucket_level_access") is True, name


def test_uploads_expire_while_media_keeps_versions() -> None:
    buckets = resources("google_storage_bucket")
    expiry = [
        rule
        for rule in buckets["uploads"]["lifecycle_rule"]
        if rule["action"][0]["type"] == "Delete"
    ]

    assert [rule["condition"][0]["age"] for rule in expiry] == ["${var.upload_retention_days}"]
    assert buckets["media"]["versioning"] == [{"enabled": True}]


def test_browsers_may_put_signed_uploads_with_the_headers_the_signature_covers() -> None:
    (cors,) = resources("google_storage_bucket")["uploads"]["dynamic"][0]["cors"]["content"]

    assert cors["method"] == ["PUT"]
    assert {h.lower() for h in cors["response_header"]} >= {
        "content-type",
        "x-goog-content-length-range",
    }


def test_the_api_service_account_holds_no_project_wide_storage_role() -> None:
    project_roles = [
        binding["role"]
        for kind in ("google_project_iam_member", "google_project_iam_binding")
        for binding in resources(kind).values()
        if API_MEMBER in members(binding)
    ]
    bucket_grants = {
        (binding["bucket"], binding["role"])
        for binding in resources("google_storage_bucket_iam_member").values()
        if binding["member"] == API_MEMBER
    }

    assert project_roles == ["roles/datastore.user"]
    assert bucket_grants == {
        ("${google_storage_bucket.uploads.name}", "roles/storage.objectAdmin"),
        ("${google_storage_bucket.media.name}", "roles/storage.objectAdmin"),
    }


def test_the_api_may_sign_urls_as_itself_and_as_no_other_account() -> None:
    token_grants = [
        binding
        for binding in resources("google_service_account_iam_member").values()
        if API_MEMBER in members(binding)
    ]

    assert [(b["service_account_id"], b["role"]) for b in token_grants] == [
        ("${google_service_account.api.name}", "roles/iam.serviceAccountTokenCreator")
    ]


def test_every_manifests_index_starts_with_owner_and_deletion_equality_filters() -> None:
    manifest_indexes = {
        name: index
        for name, index in resources("google_firestore_index").items()
        if index["collection"] == "manifests"
    }

    assert manifest_indexes
    for name, index in manifest_indexes.items():
        assert index["fields"][:2] == [
            {"field_path": "owner_id", "order": "ASCENDING"},
            {"field_path": "is_deleted", "order": "ASCENDING"},
        ], name


def test_manifest_list_indexes_cover_every_filter_and_sort_the_repository_issues() -> None:
    index = resources("google_firestore_index")["manifest_list"]
    settings = locals_()
    (optional,) = index["dynamic"][0]["fields"]["content"]

    assert index["for_each"] == "${local.manifest_list_indexes}"
    assert optional == {"field_path": "${fields.value}", "order": "ASCENDING"}
    assert index["fields"][-1] == {
        "field_path": "${each.value.sort_field}",
        "order": "${each.value.order}",
    }
    assert sorted(map(tuple, settings["manifest_optional_filters"])) == sorted(
        [(), ("category",), ("status",), ("category", "status")]
    )
    assert set(settings["manifest_sort_fields"]) == set(SORT_KEY_FIELDS.values())
    assert len(settings["manifest_sort_fields"]) == len(ManifestSort)
    assert set(settings["sort_orders"]) == {"ASCENDING", "DESCENDING"}


def test_the_assets_index_serves_queries_under_one_manifest() -> None:
    index = resources("google_firestore_index")["assets_by_source"]

    assert index["collection"] == "assets"
    assert index["query_scope"] == "COLLECTION"
    assert [f["field_path"] for f in index["fields"]] == ["source_asset_id", "sort_order"]


def test_the_live_project_check_has_its_index() -> None:
    index = resources("google_firestore_index")["projects_by_manifest_status"]

    assert index["collection"] == "projects"
    assert [f["field_path"] for f in index["fields"]] == ["manifest_id", "status"]


def _setting_exists(model: type[BaseModel], path: list[str]) -> bool:
    field = model.model_fields.get(path[0])
    if field is None:
        return False
    if len(path) == 1:
        return True
    inner = field.annotation
    return (
        isinstance(inner, type)
        and issubclass(inner, BaseModel)
        and _setting_exists(inner, path[1:])
    )


@pytest.mark.parametrize("env", ["api_env", "on_upload_env"])
def test_every_setting_a_function_receives_exists_in_shared_settings(env: str) -> None:
    variables = {**locals_()["common_env"], **locals_()[env]}
    framefork = [name for name in variables if name.startswith("FRAMEFORK_")]

    assert "GOOGLE_CLOUD_PROJECT" in variables  # Settings.project_id reads it
    assert framefork
    for name in framefork:
        path = name.removeprefix("FRAMEFORK_").lower().split("__")
        assert _setting_exists(Settings, path), name
    environment = typing.get_args(Settings.model_fields["environment"].annotation)
    assert variables["FRAMEFORK_ENVIRONMENT"] in environment
