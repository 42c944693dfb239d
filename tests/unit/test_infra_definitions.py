"""Properties of infra/terraform that the application relies on.

The HCL is parsed, not evaluated (Terraform and its providers are not needed): references such
as `google_storage_bucket.uploads.name` are compared as written. Where the application defines
the same facts (settings, sort keys), the tests compare both sides.
"""

from __future__ import annotations

import ast
import inspect
import os
import pathlib
import re
import textwrap
import typing
from datetime import datetime
from functools import cache
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, SecretStr

from model_service import export_models
from shared.models.jobs import JobStatus
from shared.models.manifests import ManifestSort
from shared.pipeline.runner import POLL_DELAY_S
from shared.repositories.jobs import ACTIVE, JOBS
from shared.repositories.projects import PROJECTS, ProjectRepository
from shared.repositories.revisions import REVISIONS, revision_doc
from shared.repositories.sort_keys import SORT_KEY_FIELDS
from shared.settings import ModelSettings, Settings
from shared.tasks import DISPATCH_DEADLINE_S

hcl2 = pytest.importorskip(
    "hcl2",
    reason="python-hcl2 is not installed in this environment (scripts/check_infra has its own)",
)
if not hasattr(hcl2, "load"):
    # What an uninstall leaves behind (the parser's runtime cache) imports as an empty package.
    pytest.skip("hcl2 is an empty leftover, not python-hcl2", allow_module_level=True)

ROOT = pathlib.Path(__file__).resolve().parents[2]
TF_DIR = ROOT / "infra" / "terraform"
API_MEMBER = "serviceAccount:${google_service_account.api.email}"
ON_UPLOAD_MEMBER = "serviceAccount:${google_service_account.on_upload.email}"
MODEL_SERVICE_MEMBER = "serviceAccount:${google_service_account.model_service.email}"
INVOKER_MEMBER = "serviceAccount:${google_service_account.tasks_invoker.email}"
RUN_STAGE_MEMBER = "serviceAccount:${google_service_account.run_stage.email}"
SWEEP_MEMBER = "serviceAccount:${google_service_account.sweep.email}"
SCHEDULER_MEMBER = "serviceAccount:${google_service_account.scheduler.email}"
MODEL_SERVICE_NAME = "${google_cloud_run_v2_service.model_service.name}"
RUN_STAGE_NAME = "${google_cloudfunctions2_function.run_stage.name}"
SWEEP_NAME = "${google_cloudfunctions2_function.sweep.name}"
GEMINI_SECRET = "${google_secret_manager_secret.gemini_api_key.secret_id}"


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


def variables() -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for block in _config().get("variable", []):
        merged.update(block)
    return merged


def members(binding: dict[str, Any]) -> list[str]:
    return [binding["member"]] if "member" in binding else list(binding.get("members", []))


def grants_to(member: str) -> dict[str, set[tuple[str, str]]]:
    """Every grant naming the member, by kind of resource: (target, role) pairs."""
    targets = {
        "google_project_iam_member": "project",
        "google_project_iam_binding": "project",
        "google_storage_bucket_iam_member": "bucket",
        "google_secret_manager_secret_iam_member": "secret_id",
        "google_service_account_iam_member": "service_account_id",
        "google_cloud_tasks_queue_iam_member": "name",
        "google_cloud_run_v2_service_iam_member": "name",
        "google_cloud_run_service_iam_member": "service",
    }
    found: dict[str, set[tuple[str, str]]] = {}
    for kind, target in targets.items():
        for binding in resources(kind).values():
            if member in members(binding):
                found.setdefault(kind, set()).add((binding[target], binding["role"]))
    return found


def model_service() -> dict[str, Any]:
    return resources("google_cloud_run_v2_service")["model_service"]


def model_container() -> dict[str, Any]:
    (template,) = model_service()["template"]
    (container,) = template["containers"]
    return dict(container)


def resolve_locals(value: str) -> str:
    """Substitutes `${local.NAME}` references with the local's literal value."""
    return re.sub(r"\$\{local\.(\w+)\}", lambda m: str(locals_()[m.group(1)]), value)


@cache
def service_decorator() -> dict[str, Any]:
    """The literal keyword arguments of @bentoml.service on ModelService (model_service/service.py)."""
    tree = ast.parse((ROOT / "model_service" / "service.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "ModelService":
            for decorator in node.decorator_list:
                if (
                    isinstance(decorator, ast.Call)
                    and isinstance(decorator.func, ast.Attribute)
                    and decorator.func.attr == "service"
                ):
                    return {
                        kw.arg: ast.literal_eval(kw.value) for kw in decorator.keywords if kw.arg
                    }
    raise AssertionError("no @bentoml.service(...) on ModelService")


@cache
def cloudbuild_steps() -> dict[str, dict[str, Any]]:
    document = yaml.safe_load((ROOT / "cloudbuild.yaml").read_text())
    return {step["id"]: step for step in document["steps"]}


@cache
def bentofile() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "bentofile.yaml").read_text())
    return document


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


def test_the_api_may_sign_urls_as_itself_and_act_only_as_the_tasks_invoker() -> None:
    account_grants = grants_to(API_MEMBER)["google_service_account_iam_member"]

    # Signing (token creator) on itself only; acting as (the OIDC tokens Cloud Tasks mints for
    # a task) on the invoker only, which may call the model service and nothing else.
    assert account_grants == {
        ("${google_service_account.api.name}", "roles/iam.serviceAccountTokenCreator"),
        ("${google_service_account.tasks_invoker.name}", "roles/iam.serviceAccountUser"),
    }


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


@pytest.mark.parametrize(
    ("function", "env"),
    [
        ("api", "api_env"),
        ("on_upload", "on_upload_env"),
        ("run_stage", "run_stage_env"),
        ("sweep", "sweep_env"),
    ],
)
def test_every_setting_a_function_receives_exists_in_shared_settings(
    function: str, env: str
) -> None:
    (service,) = resources("google_cloudfunctions2_function")[function]["service_config"]
    variables = {**locals_()["common_env"], **locals_()[env]}
    secrets = [s["key"] for s in service.get("secret_environment_variables", [])]
    framefork = [name for name in [*variables, *secrets] if name.startswith("FRAMEFORK_")]

    assert service["environment_variables"] == f"${{merge(local.common_env, local.{env})}}"

    assert "GOOGLE_CLOUD_PROJECT" in variables  # Settings.project_id reads it
    assert framefork
    for name in framefork:
        path = name.removeprefix("FRAMEFORK_").lower().split("__")
        assert _setting_exists(Settings, path), name
    environment = typing.get_args(Settings.model_fields["environment"].annotation)
    assert variables["FRAMEFORK_ENVIRONMENT"] in environment


def test_every_setting_the_model_service_receives_exists_in_shared_settings() -> None:
    variables = dict(locals_()["model_service_env"])
    secret_names = [env["name"] for env in model_container()["env"]]
    framefork = [n for n in [*variables, *secret_names] if n.startswith("FRAMEFORK_")]

    assert "GOOGLE_CLOUD_PROJECT" in variables
    for name in framefork:
        path = name.removeprefix("FRAMEFORK_").lower().split("__")
        assert _setting_exists(Settings, path), name
    # The values are ones the settings accept (backends are Literal choices).
    settings = Settings.model_validate(
        {
            "environment": variables["FRAMEFORK_ENVIRONMENT"],
            "models": {
                "detector": variables["FRAMEFORK_MODELS__DETECTOR"],
                "faces": variables["FRAMEFORK_MODELS__FACES"],
                "describer": variables["FRAMEFORK_MODELS__DESCRIBER"],
            },
        }
    )
    assert (settings.models.detector, settings.models.faces, settings.models.describer) == (
        "onnx-yolo",
        "insightface-buffalo-l",
        "gemini",
    )


# --- Firestore: jobs and revisions -----------------------------------------------------------


def _index_fields(name: str) -> list[tuple[str, str]]:
    index = resources("google_firestore_index")[name]
    assert index["query_scope"] == "COLLECTION", name
    return [(f["field_path"], f["order"]) for f in index["fields"]]


def test_the_active_job_check_has_its_index() -> None:
    # JobRepository.active_for_manifest: manifest_id == AND status in ACTIVE.
    index = resources("google_firestore_index")["jobs_by_manifest_status"]

    assert index["collection"] == JOBS
    assert _index_fields("jobs_by_manifest_status") == [
        ("manifest_id", "ASCENDING"),
        ("status", "ASCENDING"),
    ]
    assert set(ACTIVE) <= {status.value for status in JobStatus}


def test_the_latest_job_query_has_its_index() -> None:
    # JobRepository.latest_for_manifest: manifest_id == ORDER BY created_at DESC.
    index = resources("google_firestore_index")["jobs_by_manifest_created"]

    assert index["collection"] == JOBS
    assert _index_fields("jobs_by_manifest_created") == [
        ("manifest_id", "ASCENDING"),
        ("created_at", "DESCENDING"),
    ]


def test_revision_documents_expire_through_a_ttl_policy_on_the_field_the_code_writes() -> None:
    (policy,) = [
        field
        for field in resources("google_firestore_field").values()
        if field["collection"] == REVISIONS
    ]
    written = revision_doc("a change")

    assert policy["field"] == "expire_at"
    assert policy["ttl_config"] == [{}]
    assert isinstance(written[policy["field"]], datetime)
    assert written[policy["field"]] > written["at"]


# --- the model service -----------------------------------------------------------------------


def test_the_model_service_runs_on_one_l4_with_cpu_always_allocated() -> None:
    (template,) = model_service()["template"]
    (resources_,) = model_container()["resources"]
    (scaling,) = template["scaling"]
    declared = service_decorator()

    assert template["node_selector"] == [{"accelerator": "nvidia-l4"}]
    assert resources_["limits"]["nvidia.com/gpu"] == str(declared["resources"]["gpu"]) == "1"
    assert resources_["cpu_idle"] is False
    assert scaling["min_instance_count"] == 0
    assert scaling["max_instance_count"] == "${var.model_service_max_instances}"
    # Cloud Run's request timeout is the one the BentoML service declares for its requests.
    assert template["timeout"] == f"{declared['traffic']['timeout']}s" == "900s"
    assert template["max_instance_request_concurrency"] == "${var.model_service_concurrency}"
    concurrency = variables()["model_service_concurrency"]["default"]
    assert 1 <= concurrency <= declared["traffic"]["concurrency"]


def test_the_model_service_is_internal_and_only_the_tasks_invoker_may_call_it() -> None:
    service = model_service()
    iam_on_service = [
        (kind, binding)
        for kind in (
            "google_cloud_run_v2_service_iam_member",
            "google_cloud_run_v2_service_iam_binding",
            "google_cloud_run_v2_service_iam_policy",
        )
        for binding in resources(kind).values()
        if binding.get("name") == MODEL_SERVICE_NAME
    ]

    assert service["ingress"] == "INGRESS_TRAFFIC_INTERNAL_ONLY"
    assert service.get("invoker_iam_disabled", False) is False
    assert "default_uri_disabled" not in service  # Cloud Tasks calls the run.app URL
    # Cloud Tasks delivers manifesting jobs as the invoker; run_stage (keyframes) and the API
    # (uploaded keyframes) call its faces API as themselves for the identity check.
    assert sorted((kind, b["role"], tuple(members(b))) for kind, b in iam_on_service) == sorted(
        ("google_cloud_run_v2_service_iam_member", "roles/run.invoker", (member,))
        for member in (INVOKER_MEMBER, RUN_STAGE_MEMBER, API_MEMBER)
    )
    # The invoker account may call the two task targets and holds nothing else.
    assert grants_to(INVOKER_MEMBER) == {
        "google_cloud_run_v2_service_iam_member": {(MODEL_SERVICE_NAME, "roles/run.invoker")},
        "google_cloud_run_service_iam_member": {(RUN_STAGE_NAME, "roles/run.invoker")},
    }


def test_manifesting_tasks_reach_the_job_route_with_the_invokers_token() -> None:
    api_env = locals_()["api_env"]
    tasks_app = ast.parse((ROOT / "model_service" / "tasks_app.py").read_text())
    routes = [
        ast.literal_eval(node.args[0])
        for node in ast.walk(tasks_app)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Route"
    ]
    mount = re.search(
        r"@bentoml\.asgi_app\(tasks_app, path=\"([^\"]+)\"\)",
        (ROOT / "model_service" / "service.py").read_text(),
    )

    assert mount is not None
    assert (
        api_env["FRAMEFORK_TASKS__MANIFESTING_URL"]
        == ("${google_cloud_run_v2_service.model_service.uri}" + mount.group(1) + routes[0])
        == "${google_cloud_run_v2_service.model_service.uri}/tasks/run_job"
    )
    assert (
        api_env["FRAMEFORK_TASKS__INVOKER_SERVICE_ACCOUNT"]
        == "${google_service_account.tasks_invoker.email}"
    )
    assert api_env["FRAMEFORK_TASKS__MANIFESTING_QUEUE"] == (
        "${google_cloud_tasks_queue.manifesting.name}"
    )
    assert (
        api_env["FRAMEFORK_TASKS__LOCATION"] == "${google_cloud_tasks_queue.manifesting.location}"
    )
    assert ("${each.value.name}", "roles/cloudtasks.enqueuer") in grants_to(API_MEMBER)[
        "google_cloud_tasks_queue_iam_member"
    ]
    assert (
        "manifesting"
        in resources("google_cloud_tasks_queue_iam_member")["api_enqueues"]["for_each"]
    )


def test_the_gemini_key_comes_from_secret_manager_and_never_from_terraform() -> None:
    secret_envs = [env for env in model_container()["env"] if "value_source" in env]
    (key,) = [env for env in secret_envs if env["name"] == "FRAMEFORK_MODELS__GEMINI_API_KEY"]
    (source,) = key["value_source"]
    (ref,) = source["secret_key_ref"]

    assert "value" not in key
    assert ref["secret"] == GEMINI_SECRET
    assert "FRAMEFORK_MODELS__GEMINI_API_KEY" not in locals_()["model_service_env"]
    # Its value is added out of band: Terraform state never holds it.
    assert "google_secret_manager_secret_version" not in {
        kind for block in _config().get("resource", []) for kind in block
    }
    assert "gemini_api_key" in resources("google_secret_manager_secret")
    # Read by the workloads that call Gemini or Veo, and by no one else.
    readers = {
        binding["member"]
        for binding in resources("google_secret_manager_secret_iam_member").values()
        if binding["secret_id"] == GEMINI_SECRET
    }
    assert readers == {MODEL_SERVICE_MEMBER, RUN_STAGE_MEMBER, API_MEMBER}
    gemini_key = ModelSettings.model_fields["gemini_api_key"]
    assert gemini_key.annotation == SecretStr | None
    assert gemini_key.default is None


def test_the_model_service_account_holds_only_what_the_service_uses() -> None:
    assert grants_to(MODEL_SERVICE_MEMBER) == {
        "google_project_iam_member": {
            ("${var.project_id}", "roles/datastore.user"),
            ("${var.project_id}", "roles/logging.logWriter"),
        },
        "google_storage_bucket_iam_member": {
            ("${google_storage_bucket.media.name}", "roles/storage.objectUser"),
        },
        "google_secret_manager_secret_iam_member": {
            (
                "${google_secret_manager_secret.gemini_api_key.secret_id}",
                "roles/secretmanager.secretAccessor",
            ),
        },
    }
    (template,) = model_service()["template"]
    assert template["service_account"] == "${google_service_account.model_service.email}"


def test_the_model_service_loads_model_files_from_where_the_image_build_writes_them() -> None:
    env = locals_()["model_service_env"]
    model_dir = locals_()["model_service_model_dir"]
    setup = bentofile()["docker"]["setup_script"]
    script = (ROOT / setup).read_text()
    yolo_default = inspect.signature(export_models.export_yolo).parameters["weights"].default
    pack_default = inspect.signature(export_models.fetch_buffalo_l).parameters["pack"].default

    assert os.access(ROOT / setup, os.X_OK)
    assert f"out={model_dir}\n" in script
    assert '-m model_service.export_models --out "$out"' in script
    assert resolve_locals(env["FRAMEFORK_MODELS__YOLO_ONNX_PATH"]) == (
        f"{model_dir}/{pathlib.PurePath(yolo_default).stem}.onnx"
    )
    assert resolve_locals(env["FRAMEFORK_MODELS__BUFFALO_DIR"]) == f"{model_dir}/{pack_default}"


def test_the_bento_is_the_model_service_with_the_locked_model_and_gpu_packages() -> None:
    bento = bentofile()
    build = cloudbuild_steps()["model-bento"]["args"][-1]

    assert bento["service"] == "model_service.service:ModelService"
    assert set(bento["include"]) == {"/shared/", "/model_service/"}
    assert bento["python"]["lock_packages"] is False
    requirements = bento["python"]["requirements_txt"]
    export = re.search(r"uv export [^\n]*\\\n[^\n]*", build)
    assert export is not None
    flags = export.group(0).split()
    assert {"--extra", "model", "gpu", "--no-dev", "--no-emit-project"} <= set(flags)
    assert flags.count("--extra") == 2 and "cpu" not in flags
    assert flags[flags.index("--output-file") + 1] == requirements
    assert "cuda_version" in bento["docker"]


def test_cloudbuild_pushes_the_model_image_before_terraform_deploys_that_image() -> None:
    steps = cloudbuild_steps()
    order = list(steps)
    image = (
        "${_REGION}-docker.pkg.dev/${PROJECT_ID}/${_NAME_PREFIX}-model-service/"
        "framefork-models:${BUILD_ID}"
    )
    repository = resources("google_artifact_registry_repository")["model_service"]
    bento_name = service_decorator()["name"]

    assert repository["repository_id"] == "${var.name_prefix}-model-service"
    assert repository["location"] == "${var.region}"
    assert "bentoml build --version ${BUILD_ID}" in steps["model-bento"]["args"][-1]
    assert (
        f"bentoml containerize {bento_name}:${{BUILD_ID}} \\\n  --image-tag {image}"
        in steps["model-image"]["args"][-1]
    )
    assert steps["model-image-push"]["args"] == ["push", image]
    for step in ("terraform-apply-registry", "terraform-apply"):
        assert f"-var=model_service_image={image}" in steps[step]["args"], step
    assert (
        "-target=google_artifact_registry_repository.model_service"
        in steps["terraform-apply-registry"]["args"]
    )
    assert (
        order.index("test")
        < order.index("model-bento")
        < order.index("model-image")
        < order.index("model-image-push")
        < order.index("terraform-apply")
    )
    assert order.index("terraform-apply-registry") < order.index("model-image-push")
    assert not any("waitFor" in step for step in steps.values())  # strictly in file order
    assert model_container()["image"] == "${var.model_service_image}"


# --- run_stage and the pipeline queue --------------------------------------------------------


def run_stage() -> dict[str, Any]:
    return resources("google_cloudfunctions2_function")["run_stage"]


def run_stage_service() -> dict[str, Any]:
    (service,) = run_stage()["service_config"]
    return dict(service)


def test_every_function_entry_point_is_exported_by_the_root_main() -> None:
    # Cloud Functions looks for entry points in the archive's root main.py.
    tree = ast.parse((ROOT / "main.py").read_text())
    exported = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "functions.main"
        for alias in node.names
    }
    entry_points = {
        function["build_config"][0]["entry_point"]
        for function in resources("google_cloudfunctions2_function").values()
    }

    assert entry_points == {"api", "on_upload", "run_stage", "sweep"}
    assert entry_points <= exported


def test_run_stage_is_internal_and_only_the_tasks_invoker_may_call_it() -> None:
    service = run_stage_service()
    iam_on_run_stage = [
        (kind, binding)
        for kind, target in (
            ("google_cloud_run_service_iam_member", "service"),
            ("google_cloud_run_service_iam_binding", "service"),
            ("google_cloud_run_service_iam_policy", "service"),
            ("google_cloud_run_v2_service_iam_member", "name"),
            ("google_cloud_run_v2_service_iam_binding", "name"),
            ("google_cloud_run_v2_service_iam_policy", "name"),
            ("google_cloudfunctions2_function_iam_member", "cloud_function"),
            ("google_cloudfunctions2_function_iam_binding", "cloud_function"),
            ("google_cloudfunctions2_function_iam_policy", "cloud_function"),
        )
        for binding in resources(kind).values()
        if binding.get(target) == RUN_STAGE_NAME
    ]

    assert "event_trigger" not in run_stage()
    assert run_stage()["build_config"][0]["entry_point"] == "run_stage"
    assert service["ingress_settings"] == "ALLOW_INTERNAL_ONLY"
    assert service["service_account_email"] == "${google_service_account.run_stage.email}"
    assert [(kind, b["role"], members(b)) for kind, b in iam_on_run_stage] == [
        ("google_cloud_run_service_iam_member", "roles/run.invoker", [INVOKER_MEMBER])
    ]


def test_run_stage_has_room_for_ffmpeg_and_the_whole_dispatch_deadline() -> None:
    service = run_stage_service()

    assert service["available_memory"] == "2Gi"
    assert service["available_cpu"] == "1"
    assert service["max_instance_request_concurrency"] == 1
    assert locals_()["run_stage_env"]["THREADS"] == "1"
    # A shorter timeout would cut a stage off while Cloud Tasks still waits for it.
    assert service["timeout_seconds"] == DISPATCH_DEADLINE_S == 1800


def test_the_run_stage_account_holds_only_what_the_pipeline_uses() -> None:
    grants = grants_to(RUN_STAGE_MEMBER)
    project_roles = [
        binding["role"]
        for kind in ("google_project_iam_member", "google_project_iam_binding")
        for binding in resources(kind).values()
        if RUN_STAGE_MEMBER in members(binding)
    ]

    # No project-wide storage role: media only, never uploads or other buckets (the state).
    # Firestore, and Vertex AI for Veo clips; no project-wide storage role.
    assert sorted(project_roles) == ["roles/aiplatform.user", "roles/datastore.user"]
    assert grants == {
        "google_project_iam_member": {
            ("${var.project_id}", "roles/datastore.user"),
            ("${var.project_id}", "roles/aiplatform.user"),
        },
        "google_storage_bucket_iam_member": {
            ("${google_storage_bucket.media.name}", "roles/storage.objectUser"),
        },
        "google_secret_manager_secret_iam_member": {
            (GEMINI_SECRET, "roles/secretmanager.secretAccessor"),
        },
        # Enqueues into the pipeline queue only, with tokens of the invoker only.
        "google_cloud_tasks_queue_iam_member": {
            ("${google_cloud_tasks_queue.pipeline.name}", "roles/cloudtasks.enqueuer"),
        },
        "google_service_account_iam_member": {
            ("${google_service_account.tasks_invoker.name}", "roles/iam.serviceAccountUser"),
        },
        # The identity check of keyframes: the model service's faces API.
        "google_cloud_run_v2_service_iam_member": {(MODEL_SERVICE_NAME, "roles/run.invoker")},
    }


def test_the_identity_check_reaches_the_model_service_with_an_id_token() -> None:
    settings = locals_()
    for env in (settings["run_stage_env"], settings["api_env"]):
        assert env["FRAMEFORK_IDENTITY__MODEL_SERVICE_URL"] == (
            "${google_cloud_run_v2_service.model_service.uri}"
        )
        assert env["FRAMEFORK_IDENTITY__ID_TOKEN"] == "true"
    assert {"model_service_url", "id_token"} <= set(type(Settings().identity).model_fields)
    assert (MODEL_SERVICE_NAME, "roles/run.invoker") in grants_to(API_MEMBER)[
        "google_cloud_run_v2_service_iam_member"
    ]


def test_pipeline_tasks_go_to_run_stage_with_the_invokers_token() -> None:
    settings = locals_()
    api_env, run_stage_env = settings["api_env"], settings["run_stage_env"]
    queues = resources("google_cloud_tasks_queue")
    (check,) = [block["run_stage_url"] for block in _config()["check"]]
    (looked_up,) = [d["google_cloud_run_v2_service"]["run_stage"] for d in check["data"]]
    (assertion,) = check["assert"]

    # The API enqueues the first stage and run_stage the rest, to the same place.
    for env in (api_env, run_stage_env):
        assert env["FRAMEFORK_TASKS__PIPELINE_URL"] == "${local.run_stage_url}"
        assert env["FRAMEFORK_TASKS__PIPELINE_QUEUE"] == "${google_cloud_tasks_queue.pipeline.name}"
        assert env["FRAMEFORK_TASKS__INVOKER_SERVICE_ACCOUNT"] == (
            "${google_service_account.tasks_invoker.email}"
        )
    assert run_stage_env["FRAMEFORK_TASKS__LOCATION"] == (
        "${google_cloud_tasks_queue.pipeline.location}"
    )
    # The API names one location for both queues.
    assert queues["manifesting"]["location"] == queues["pipeline"]["location"]
    # The URL is run_stage's deterministic run.app URL: its Cloud Run service bears the
    # function's name, in the function's region.
    assert run_stage()["name"] == "${local.run_stage_name}"
    assert run_stage()["location"] == "${var.region}"
    assert resolve_locals(settings["run_stage_url"]) == (
        f"https://{settings['run_stage_name']}"
        "-${data.google_project.this.number}.${var.region}.run.app"
    )
    assert looked_up["name"] == RUN_STAGE_NAME
    assert assertion["condition"] == (
        "${contains(data.google_cloud_run_v2_service.run_stage.urls, local.run_stage_url)}"
    )


def _duration_s(value: str) -> float:
    assert value.endswith("s"), value
    return float(value[:-1])


def test_the_pipeline_queue_retries_briefly_and_never_outruns_run_stage() -> None:
    queue = resources("google_cloud_tasks_queue")["pipeline"]
    (retry,) = queue["retry_config"]
    (rates,) = queue["rate_limits"]

    # Polling is the code's own delayed tasks; a retry resumes a stalled chain about when its
    # next poll would have been due, and never waits longer than a few minutes.
    assert _duration_s(retry["min_backoff"]) == POLL_DELAY_S
    assert _duration_s(retry["max_backoff"]) <= 300
    # Long enough to ride out a short outage: a task that gives up strands its project.
    assert _duration_s(retry["max_retry_duration"]) >= 3600
    assert retry["max_attempts"] >= 5
    # One task per instance: the queue never holds more in flight than run_stage can take.
    assert rates["max_concurrent_dispatches"] == run_stage_service()["max_instance_count"]
    assert run_stage_service()["max_instance_request_concurrency"] == 1


# --- the sweep and its schedule --------------------------------------------------------------


def sweep() -> dict[str, Any]:
    return resources("google_cloudfunctions2_function")["sweep"]


def sweep_service() -> dict[str, Any]:
    (service,) = sweep()["service_config"]
    return dict(service)


def _iam_on_service(name: str) -> list[tuple[str, dict[str, Any]]]:
    """Every IAM member, binding or policy on the Cloud Run service (or function) `name`."""
    return [
        (kind, binding)
        for kind, target in (
            ("google_cloud_run_service_iam_member", "service"),
            ("google_cloud_run_service_iam_binding", "service"),
            ("google_cloud_run_service_iam_policy", "service"),
            ("google_cloud_run_v2_service_iam_member", "name"),
            ("google_cloud_run_v2_service_iam_binding", "name"),
            ("google_cloud_run_v2_service_iam_policy", "name"),
            ("google_cloudfunctions2_function_iam_member", "cloud_function"),
            ("google_cloudfunctions2_function_iam_binding", "cloud_function"),
            ("google_cloudfunctions2_function_iam_policy", "cloud_function"),
        )
        for binding in resources(kind).values()
        if binding.get(target) == name
    ]


def test_the_sweep_is_internal_and_only_the_scheduler_may_call_it() -> None:
    service = sweep_service()
    (build,) = sweep()["build_config"]

    assert "event_trigger" not in sweep()
    assert build["entry_point"] == "sweep"
    # The same archive as every other function.
    assert build["source"] == run_stage()["build_config"][0]["source"]
    # Cloud Scheduler in the same project is internal traffic at the run.app URL.
    assert service["ingress_settings"] == "ALLOW_INTERNAL_ONLY"
    assert service["service_account_email"] == "${google_service_account.sweep.email}"
    assert [(kind, b["role"], members(b)) for kind, b in _iam_on_service(SWEEP_NAME)] == [
        ("google_cloud_run_service_iam_member", "roles/run.invoker", [SCHEDULER_MEMBER])
    ]
    # The scheduler's account may call the sweep and holds nothing else; the tasks invoker
    # gains nothing from it (its grants are checked with the model service).
    assert grants_to(SCHEDULER_MEMBER) == {
        "google_cloud_run_service_iam_member": {(SWEEP_NAME, "roles/run.invoker")},
    }


def test_one_sweep_runs_at_a_time_on_a_small_instance() -> None:
    service = sweep_service()

    assert service["max_instance_count"] == 1
    assert service["max_instance_request_concurrency"] == 1
    assert locals_()["sweep_env"]["THREADS"] == "1"
    assert service["available_memory"] == "256Mi"
    # No models, no storage, no secrets.
    assert "secret_environment_variables" not in service


def test_the_scheduler_posts_to_the_sweep_every_minute_with_its_own_token() -> None:
    (job,) = resources("google_cloud_scheduler_job").values()
    (target,) = job["http_target"]
    (token,) = target["oidc_token"]
    (retry,) = job["retry_config"]
    timeout_s = locals_()["sweep_timeout_s"]

    assert job["schedule"] == "${var.sweep_schedule}"
    assert variables()["sweep_schedule"]["default"] == "* * * * *"
    assert target["http_method"] == "POST"
    # The run.app URL of the function's service, where the scheduler counts as internal.
    assert target["uri"] == "${google_cloudfunctions2_function.sweep.service_config[0].uri}"
    assert token["service_account_email"] == "${google_service_account.scheduler.email}"
    assert token.get("audience", target["uri"]) == target["uri"]
    # No retries (the next tick is one), and the scheduler waits as long as a sweep may run.
    assert retry["retry_count"] == 0
    assert resolve_locals(job["attempt_deadline"]) == f"{timeout_s}s"
    assert resolve_locals(str(sweep_service()["timeout_seconds"])) == str(timeout_s)
    assert 15 <= timeout_s <= 1800  # Cloud Scheduler's range for HTTP targets
    assert "cloudscheduler.googleapis.com" in str(locals_()["services"])
    assert "${google_project_service.enabled}" in job["depends_on"]


def test_the_sweep_account_holds_only_what_requeueing_uses() -> None:
    enqueues = resources("google_cloud_tasks_queue_iam_member")

    assert grants_to(SWEEP_MEMBER) == {
        "google_project_iam_member": {("${var.project_id}", "roles/datastore.user")},
        "google_cloud_tasks_queue_iam_member": {
            ("${each.value.name}", "roles/cloudtasks.enqueuer")
        },
        "google_service_account_iam_member": {
            ("${google_service_account.tasks_invoker.name}", "roles/iam.serviceAccountUser"),
        },
    }
    # The two queues, as for the API.
    assert enqueues["sweep_enqueues"]["for_each"] == enqueues["api_enqueues"]["for_each"]
    assert set(enqueues["sweep_enqueues"]["for_each"]) == {"manifesting", "pipeline"}


def test_requeued_work_goes_where_it_first_went_and_is_judged_by_the_workers_leases() -> None:
    settings = locals_()
    api_env, sweep_env = settings["api_env"], settings["sweep_env"]
    leases = {
        "FRAMEFORK_MODELS__JOB_LEASE_S",
        "FRAMEFORK_TASKS__STAGE_LEASE_S",
        "FRAMEFORK_TASKS__MAX_REQUEUES",
    }

    for name in (
        "FRAMEFORK_TASKS__LOCATION",
        "FRAMEFORK_TASKS__MANIFESTING_QUEUE",
        "FRAMEFORK_TASKS__PIPELINE_QUEUE",
        "FRAMEFORK_TASKS__MANIFESTING_URL",
        "FRAMEFORK_TASKS__PIPELINE_URL",
        "FRAMEFORK_TASKS__INVOKER_SERVICE_ACCOUNT",
    ):
        assert sweep_env[name] == api_env[name], name
    # A lease set for the worker that holds it but not for the sweep (or the other way round)
    # would have the sweep requeue live work, or wait too long: all stay at their defaults.
    for env in ("common_env", "api_env", "run_stage_env", "sweep_env", "model_service_env"):
        assert not leases & set(settings[env]), env


def _project_list_query() -> tuple[list[str], list[str], tuple[str, str]]:
    """(equality fields, of which the optional ones, (order field, direction)) of
    ProjectRepository.list_for_owner, read from its source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(ProjectRepository.list_for_owner)))
    equality: list[str] = []
    optional: list[str] = []
    order: tuple[str, str] | None = None
    conditional = {
        id(inner) for node in ast.walk(tree) if isinstance(node, ast.If) for inner in ast.walk(node)
    }
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    ]
    # In source order, which is the order the filters apply in.
    for node in sorted(calls, key=lambda call: (call.lineno, call.col_offset)):
        assert isinstance(node.func, ast.Attribute)
        if node.func.attr == "FieldFilter" and ast.literal_eval(node.args[1]) == "==":
            field = ast.literal_eval(node.args[0])
            equality.append(field)
            if id(node) in conditional:
                optional.append(field)
        elif node.func.attr == "order_by":
            direction = next(kw.value for kw in node.keywords if kw.arg == "direction")
            assert isinstance(direction, ast.Attribute)
            order = (ast.literal_eval(node.args[0]), direction.attr)
    assert order is not None
    return equality, optional, order


def test_every_project_list_query_has_its_index() -> None:
    equality, optional, (sort_field, direction) = _project_list_query()
    project_indexes = {
        tuple((f["field_path"], f["order"]) for f in index["fields"])
        for index in resources("google_firestore_index").values()
        if index["collection"] == PROJECTS and index["query_scope"] == "COLLECTION"
    }

    assert (equality, optional, (sort_field, direction)) == (
        ["owner_id", "is_deleted", "status"],
        ["status"],
        ("sort_created_at", "DESCENDING"),
    )
    # Equality fields in any order Firestore accepts, then the sort key in its direction.
    for narrowed in (False, True):
        fields = [f for f in equality if narrowed or f not in optional]
        wanted = (*((f, "ASCENDING") for f in fields), (sort_field, direction))
        assert wanted in project_indexes, wanted


# --- Firestore security rules ----------------------------------------------------------------


def test_the_firestore_rules_file_is_released_to_the_database() -> None:
    (ruleset,) = resources("google_firebaserules_ruleset").values()
    (release,) = resources("google_firebaserules_release").values()
    (source,) = ruleset["source"]
    (rules_file,) = source["files"]
    # A toset([...]) call, which the parser keeps as its text.
    services = str(locals_()["services"])

    # The file the unit tests check (tests/unit/test_firestore_rules.py) is the one deployed.
    assert rules_file["name"] == "firestore.rules"
    assert rules_file["content"] == '${file("${path.module}/firestore.rules")}'
    assert (TF_DIR / "firestore.rules").is_file()
    # A new ruleset exists before the release moves to it; the old one goes after.
    assert ruleset["lifecycle"] == [{"create_before_destroy": True}]
    # The release Firestore reads its rules from, named after the database itself.
    assert release["name"] == (
        '${(google_firestore_database.main.name == "(default)" ? "cloud.firestore" : '
        '"cloud.firestore/${google_firestore_database.main.name}")}'
    )
    assert release["ruleset_name"] == (
        "projects/${var.project_id}/rulesets/${google_firebaserules_ruleset.firestore.name}"
    )
    assert resources("google_firestore_database")["main"]["name"] == "(default)"
    assert "firebaserules.googleapis.com" in services, services
