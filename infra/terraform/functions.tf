locals {
  # What both functions read through shared.settings (FRAMEFORK_ prefix, "__" between a group
  # and its field). GOOGLE_CLOUD_PROJECT is set explicitly: the Python runtimes of Cloud
  # Functions gen2 no longer provide it.
  common_env = {
    GOOGLE_CLOUD_PROJECT                = var.project_id
    FRAMEFORK_ENVIRONMENT               = "production"
    FRAMEFORK_STORAGE__UPLOAD_BUCKET    = google_storage_bucket.uploads.name
    FRAMEFORK_STORAGE__MEDIA_BUCKET     = google_storage_bucket.media.name
    FRAMEFORK_STORAGE__MAX_UPLOAD_BYTES = tostring(var.upload_max_bytes)
    # Tags each log line with its execution id, to follow one request or event.
    LOG_EXECUTION_ID = "true"
  }

  # Only what each function adds to common_env (kept apart so the unit tests can read both).
  api_env = {
    FRAMEFORK_AUTH__MODE             = "firebase"
    FRAMEFORK_AUTH__FIREBASE_PROJECT = var.project_id
    # pydantic-settings parses a list-valued setting from JSON.
    FRAMEFORK_API__CORS_ORIGINS = jsonencode(var.web_origins)
    # functions-framework runs gunicorn with 4 threads per CPU unless told otherwise; one
    # thread per concurrent request keeps requests from queueing inside the instance.
    THREADS = tostring(var.api_concurrency)
    # Where the API enqueues work (shared/tasks.py): the queues of tasks.tf, by their short
    # names, in their region.
    FRAMEFORK_TASKS__LOCATION          = google_cloud_tasks_queue.manifesting.location
    FRAMEFORK_TASKS__MANIFESTING_QUEUE = google_cloud_tasks_queue.manifesting.name
    FRAMEFORK_TASKS__PIPELINE_QUEUE    = google_cloud_tasks_queue.pipeline.name
    # Manifesting tasks go to the model service's Cloud Tasks target...
    FRAMEFORK_TASKS__MANIFESTING_URL = "${google_cloud_run_v2_service.model_service.uri}/tasks/run_job"
    # ...with an OIDC token of the one identity that may invoke it.
    FRAMEFORK_TASKS__INVOKER_SERVICE_ACCOUNT = google_service_account.tasks_invoker.email
  }

  on_upload_env = {
    THREADS = "1"
  }
}

# Images of both functions. Without it Cloud Functions creates gcf-artifacts, which keeps every
# image forever and on which the build identity would need a project-wide writer role.
resource "google_artifact_registry_repository" "functions" {
  #checkov:skip=CKV_GCP_84:Images hold the functions code and its dependencies, no user data; Google-managed encryption covers them, and a customer-managed key would make every build and image pull depend on Cloud KMS.
  project       = var.project_id
  location      = var.region
  repository_id = "${var.name_prefix}-functions"
  format        = "DOCKER"
  description   = "Container images built from the Framefork functions."
  labels        = local.labels

  # A Cloud Run revision needs its image to start new instances: the newest images stay, older
  # ones go after a month.
  cleanup_policy_dry_run = false

  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = 10
    }
  }

  cleanup_policies {
    id     = "delete-old"
    action = "DELETE"
    condition {
      older_than = "2592000s"
    }
  }

  depends_on = [google_project_service.enabled]
}

resource "google_cloudfunctions2_function" "api" {
  #checkov:skip=CKV_GCP_124:The API serves browsers and mobile apps on the internet; it authenticates each request with a Firebase ID token in code.
  name        = "${var.name_prefix}-api"
  project     = var.project_id
  location    = var.region
  description = "Framefork REST API: manifests, assets, uploads, projects."
  labels      = local.labels

  build_config {
    runtime           = "python311"
    entry_point       = "api"
    service_account   = google_service_account.functions_build.id
    docker_repository = google_artifact_registry_repository.functions.id

    source {
      storage_source {
        bucket = google_storage_bucket.functions_source.name
        object = google_storage_bucket_object.functions_source.name
      }
    }
  }

  service_config {
    service_account_email = google_service_account.api.email
    # Web and mobile apps call it from anywhere. The API verifies the caller's Firebase ID
    # token itself (FRAMEFORK_AUTH__MODE=firebase), so Google's front end lets every request
    # through (see the public invoker below) and the code decides.
    ingress_settings                 = "ALLOW_ALL"
    all_traffic_on_latest_revision   = true
    available_memory                 = "512Mi"
    available_cpu                    = "1"
    max_instance_request_concurrency = var.api_concurrency
    min_instance_count               = 0
    max_instance_count               = var.api_max_instances
    timeout_seconds                  = 60
    environment_variables            = merge(local.common_env, local.api_env)
  }

  # The build identity must hold its roles before Cloud Functions starts a build with it.
  depends_on = [
    google_project_iam_member.functions_build_log_writer,
    google_project_iam_member.functions_build_reads_sources,
    google_artifact_registry_repository_iam_member.functions_build_pushes_images,
  ]
}

# Public invoker. A gen2 function is a Cloud Run service under Cloud Run's IAM, which would
# otherwise demand a Google identity token that browsers and mobile apps signed in with
# Firebase do not have. Authentication is the API's own job.
resource "google_cloud_run_service_iam_member" "api_public_invoker" {
  #checkov:skip=CKV_GCP_102:The API is public by design and authenticates every request with a Firebase ID token in code.
  project  = var.project_id
  location = google_cloudfunctions2_function.api.location
  service  = google_cloudfunctions2_function.api.name
  role     = "roles/run.invoker"
  member   = "allUsers"
}

resource "google_cloudfunctions2_function" "on_upload" {
  name        = "${var.name_prefix}-on-upload"
  project     = var.project_id
  location    = var.region
  description = "Validates each finalized upload, derives the media and attaches it to its asset."
  labels      = local.labels

  build_config {
    runtime           = "python311"
    entry_point       = "on_upload"
    service_account   = google_service_account.functions_build.id
    docker_repository = google_artifact_registry_repository.functions.id

    source {
      storage_source {
        bucket = google_storage_bucket.functions_source.name
        object = google_storage_bucket_object.functions_source.name
      }
    }
  }

  service_config {
    service_account_email = google_service_account.on_upload.email
    # Only Eventarc (through Pub/Sub, inside Google's network) calls it.
    ingress_settings               = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision = true
    # Decoding an image of up to FRAMEFORK_STORAGE__MAX_IMAGE_PIXELS (40 MP, 160 MB as RGBA)
    # plus its copies fits in 1 GiB; one event per instance keeps that bound.
    available_memory                 = "1Gi"
    available_cpu                    = "1"
    max_instance_request_concurrency = 1
    min_instance_count               = 0
    max_instance_count               = var.on_upload_max_instances
    timeout_seconds                  = 300
    environment_variables            = merge(local.common_env, local.on_upload_env)
  }

  event_trigger {
    # A storage trigger must live in the bucket's location.
    trigger_region = lower(google_storage_bucket.uploads.location)
    event_type     = "google.cloud.storage.object.v1.finalized"
    # Transient failures (Firestore contention, a storage hiccup) are retried for up to a day;
    # a file that is bad for good is recorded on its asset and acknowledged, or it would be
    # retried for that whole day too.
    retry_policy          = "RETRY_POLICY_RETRY"
    service_account_email = google_service_account.on_upload.email

    event_filters {
      attribute = "bucket"
      value     = google_storage_bucket.uploads.name
    }
  }

  # Besides the build grants, a storage trigger needs the agents' roles in place at creation.
  depends_on = [
    google_project_iam_member.functions_build_log_writer,
    google_project_iam_member.functions_build_reads_sources,
    google_artifact_registry_repository_iam_member.functions_build_pushes_images,
    google_project_iam_member.gcs_agent_pubsub_publisher,
    google_project_iam_member.eventarc_agent,
    google_project_iam_member.on_upload_event_receiver,
  ]
}

# The trigger delivers events as the on_upload account, which may invoke this service and no
# other.
resource "google_cloud_run_service_iam_member" "on_upload_trigger_invoker" {
  project  = var.project_id
  location = google_cloudfunctions2_function.on_upload.location
  service  = google_cloudfunctions2_function.on_upload.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.on_upload.email}"
}
