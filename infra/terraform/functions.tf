locals {
  # What every function reads through shared.settings (FRAMEFORK_ prefix, "__" between a group
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

  # run_stage's address, known before the function exists: run_stage enqueues the next stage
  # to itself, and a function's environment cannot refer to its own resource. A gen2 function
  # is the Cloud Run service of the same name, and Cloud Run gives every service the
  # deterministic URL https://SERVICE-PROJECT_NUMBER.REGION.run.app beside its hashed one (the
  # check "run_stage_url" below confirms it after each apply). run.app, not cloudfunctions.net:
  # that is the address through which Cloud Tasks counts as internal traffic.
  run_stage_name = "${var.name_prefix}-run-stage"
  run_stage_url  = "https://${local.run_stage_name}-${data.google_project.this.number}.${var.region}.run.app"

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
    # ...the first stage of a generation to run_stage...
    FRAMEFORK_TASKS__PIPELINE_URL = local.run_stage_url
    # ...both with an OIDC token of the one identity that may invoke them.
    FRAMEFORK_TASKS__INVOKER_SERVICE_ACCOUNT = google_service_account.tasks_invoker.email
    # An uploaded keyframe is checked for the characters' faces within the request
    # (shared/pipeline/identity.py), through the model service's faces API, with an ID token of
    # the API's own account (model_service.tf grants it run.invoker).
    FRAMEFORK_IDENTITY__MODEL_SERVICE_URL = google_cloud_run_v2_service.model_service.uri
    FRAMEFORK_IDENTITY__ID_TOKEN          = "true"
  }

  on_upload_env = {
    THREADS = "1"
  }

  # run_stage enqueues each following stage, and the delayed tasks that poll clips, into the
  # pipeline queue, addressed to itself, exactly as the API enqueues the first one.
  run_stage_env = {
    # One task per instance (see max_instance_request_concurrency).
    THREADS                                  = "1"
    FRAMEFORK_TASKS__LOCATION                = google_cloud_tasks_queue.pipeline.location
    FRAMEFORK_TASKS__PIPELINE_QUEUE          = google_cloud_tasks_queue.pipeline.name
    FRAMEFORK_TASKS__PIPELINE_URL            = local.run_stage_url
    FRAMEFORK_TASKS__INVOKER_SERVICE_ACCOUNT = google_service_account.tasks_invoker.email
    # Veo runs on Vertex AI with the function's own credentials (roles/aiplatform.user).
    FRAMEFORK_MODELS__VERTEX_PROJECT  = var.project_id
    FRAMEFORK_MODELS__VERTEX_LOCATION = var.region
    # Model calls a project's stage makes at once, shared out among its chunk tasks (each
    # runs its share in one event loop: network waits, not CPU, so the one vCPU is enough).
    # A task makes at most `concurrency` calls at once, so calls in flight across the service
    # are at most run_stage_max_instances × this (20 × 8 = 160 by default): size both to the
    # Gemini and Veo quotas of the project.
    FRAMEFORK_PIPELINE__CONCURRENCY = tostring(var.pipeline_concurrency)
    # Scenes per keyframes or clips task. A chunk makes at most 2 × this image calls, at
    # least one at a time: 20 calls × ~10 s of image latency is under 4 min at worst, far
    # inside the 30 min dispatch deadline whatever the scene count. A 30-scene video's 3
    # chunks run on 3 instances at once; clips are polled by delayed tasks, not waited on.
    FRAMEFORK_PIPELINE__CHUNK_SCENES = tostring(var.pipeline_chunk_scenes)
    # Each keyframe is checked for the characters' faces through the model service's faces
    # API, with an ID token of run_stage's own account, whose audience is the service's URL.
    FRAMEFORK_IDENTITY__MODEL_SERVICE_URL = google_cloud_run_v2_service.model_service.uri
    FRAMEFORK_IDENTITY__ID_TOKEN          = "true"
  }
}

# Images of the functions. Without it Cloud Functions creates gcf-artifacts, which keeps every
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

    # Regenerating a keyframe (POST .../keyframe/regenerate) calls the project's image model
    # within the request; with a Gemini model that needs the key. Resolved from Secret Manager
    # when an instance starts, as the function's identity, so it is in neither the state nor
    # the function's configuration.
    secret_environment_variables {
      key        = "FRAMEFORK_MODELS__GEMINI_API_KEY"
      project_id = var.project_id
      secret     = google_secret_manager_secret.gemini_api_key.secret_id
      version    = "latest"
    }
  }

  # The build identity must hold its roles before Cloud Functions starts a build with it, and
  # a revision starts only once its identity can read the secret.
  depends_on = [
    google_project_iam_member.functions_build_log_writer,
    google_project_iam_member.functions_build_reads_sources,
    google_artifact_registry_repository_iam_member.functions_build_pushes_images,
    google_secret_manager_secret_iam_member.api_reads_gemini_key,
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

resource "google_cloudfunctions2_function" "run_stage" {
  name        = local.run_stage_name
  project     = var.project_id
  location    = var.region
  description = "Runs one generation stage (storyboard, keyframes, clips, stitch) per Cloud Task of the pipeline queue."
  labels      = local.labels

  build_config {
    runtime           = "python311"
    entry_point       = "run_stage"
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
    service_account_email = google_service_account.run_stage.email
    # Only the pipeline queue calls it, at the run.app URL, which Cloud Tasks in the same
    # project reaches as internal traffic; nothing on the internet does, whatever IAM says.
    ingress_settings               = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision = true
    # The stitch streams every clip to /tmp (memory-backed here) and writes the video beside
    # them, holding no clip in the process, and ffmpeg (the imageio-ffmpeg binary) re-encodes
    # on the one vCPU: 2 GiB holds a long video's clips with room to spare.
    available_memory = "2Gi"
    available_cpu    = "1"
    # One stage per instance: a stitch must not share its memory with another.
    max_instance_request_concurrency = 1
    min_instance_count               = 0
    # The queue dispatches at most this many tasks at once (tasks.tf), so a dispatch never
    # finds every instance busy (a 429, which Cloud Tasks answers by slowing the whole queue).
    max_instance_count = var.run_stage_max_instances
    # Cloud Tasks waits at most 30 min for an HTTP target (the dispatch deadline the code sets
    # on every task, shared/tasks.py); a stage that runs longer is retried anyway.
    timeout_seconds       = 1800
    environment_variables = merge(local.common_env, local.run_stage_env)

    # Gemini and Veo calls of projects that use them (shared/pipeline/providers.py).
    secret_environment_variables {
      key        = "FRAMEFORK_MODELS__GEMINI_API_KEY"
      project_id = var.project_id
      secret     = google_secret_manager_secret.gemini_api_key.secret_id
      version    = "latest"
    }
  }

  # The build grants as for the other functions; a revision starts only once its identity
  # can read the secret, and its first task needs the other grants.
  depends_on = [
    google_project_iam_member.functions_build_log_writer,
    google_project_iam_member.functions_build_reads_sources,
    google_artifact_registry_repository_iam_member.functions_build_pushes_images,
    google_secret_manager_secret_iam_member.run_stage_reads_gemini_key,
    google_project_iam_member.run_stage_datastore_user,
    google_storage_bucket_iam_member.run_stage_media_objects,
  ]
}

# Cloud Tasks calls run_stage with an OIDC token of the invoker account, which the API and
# run_stage name on every pipeline task (FRAMEFORK_TASKS__INVOKER_SERVICE_ACCOUNT). That account
# is its only invoker; no one else, human or workload, holds run.invoker on it.
resource "google_cloud_run_service_iam_member" "run_stage_tasks_invoker" {
  project  = var.project_id
  location = google_cloudfunctions2_function.run_stage.location
  service  = google_cloudfunctions2_function.run_stage.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.tasks_invoker.email}"
}

# Pipeline tasks are addressed to local.run_stage_url, which is built rather than read from the
# function (see the local). Should Cloud Run not serve that URL, every pipeline task would fail
# to dispatch: this check says so on each plan and apply instead.
check "run_stage_url" {
  data "google_cloud_run_v2_service" "run_stage" {
    project  = var.project_id
    location = google_cloudfunctions2_function.run_stage.location
    name     = google_cloudfunctions2_function.run_stage.name
  }

  assert {
    condition     = contains(data.google_cloud_run_v2_service.run_stage.urls, local.run_stage_url)
    error_message = "run_stage does not answer at ${local.run_stage_url} (FRAMEFORK_TASKS__PIPELINE_URL); its URLs are ${jsonencode(data.google_cloud_run_v2_service.run_stage.urls)}. Set local.run_stage_url to one of them."
  }
}
