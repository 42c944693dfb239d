# The sweep: stuck work ends by itself. A manifesting job whose worker died (its lease ran out)
# or whose task was lost (queued and untouched for a lease's length), and a pipeline stage in the
# same state, is queued again, or failed, naming why, after FRAMEFORK_TASKS__MAX_REQUEUES (3)
# requeues. Cloud Scheduler calls it on var.sweep_schedule (every minute).

locals {
  # What Cloud Run waits for one sweep, and what Cloud Scheduler waits for its answer.
  sweep_timeout_s = 120

  # Only what the sweep adds to common_env. The tasks it queues again go where the originals
  # went, the same way: the queues, targets and invoker account the API names (api_env).
  # The leases it judges "stuck" by (FRAMEFORK_MODELS__JOB_LEASE_S, FRAMEFORK_TASKS__STAGE_LEASE_S)
  # and FRAMEFORK_TASKS__MAX_REQUEUES are left at the settings' defaults, as they are for the
  # model service and run_stage, which hold those leases: set one here only together with them.
  sweep_env = {
    # One sweep per instance (see max_instance_request_concurrency).
    THREADS                                  = "1"
    FRAMEFORK_TASKS__LOCATION                = google_cloud_tasks_queue.manifesting.location
    FRAMEFORK_TASKS__MANIFESTING_QUEUE       = google_cloud_tasks_queue.manifesting.name
    FRAMEFORK_TASKS__PIPELINE_QUEUE          = google_cloud_tasks_queue.pipeline.name
    FRAMEFORK_TASKS__MANIFESTING_URL         = "${google_cloud_run_v2_service.model_service.uri}/tasks/run_job"
    FRAMEFORK_TASKS__PIPELINE_URL            = local.run_stage_url
    FRAMEFORK_TASKS__INVOKER_SERVICE_ACCOUNT = google_service_account.tasks_invoker.email
  }
}

resource "google_cloudfunctions2_function" "sweep" {
  name        = "${var.name_prefix}-sweep"
  project     = var.project_id
  location    = var.region
  description = "Queues stuck manifesting jobs and pipeline stages again, or fails them after too many tries; run by Cloud Scheduler."
  labels      = local.labels

  build_config {
    runtime           = "python311"
    entry_point       = "sweep"
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
    service_account_email = google_service_account.sweep.email
    # Only Cloud Scheduler calls it. A Cloud Scheduler job in the same project counts as
    # internal traffic when it calls a function's run.app URL (Cloud Run's and Cloud Functions'
    # ingress documentation both list it beside Cloud Tasks), which is the URL the job below
    # uses; nothing on the internet reaches it, whatever IAM says, and IAM admits the
    # scheduler's account only.
    ingress_settings               = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision = true
    # A few Firestore queries and writes and a task per stuck item: the smallest size that fits
    # the Python runtime with its clients, and the CPU that comes with it.
    available_memory = "256Mi"
    # One sweep at a time is enough, and one instance serves every schedule tick. Overlapping
    # sweeps would still be safe (each requeue is a guarded write, counted once); a tick that
    # finds the instance still sweeping fails and the next tick sweeps again.
    max_instance_request_concurrency = 1
    min_instance_count               = 0
    max_instance_count               = 1
    timeout_seconds                  = local.sweep_timeout_s
    environment_variables            = merge(local.common_env, local.sweep_env)
  }

  # The build grants, as for the other functions.
  depends_on = [
    google_project_iam_member.functions_build_log_writer,
    google_project_iam_member.functions_build_reads_sources,
    google_artifact_registry_repository_iam_member.functions_build_pushes_images,
  ]
}

# Cloud Scheduler calls the sweep with an OIDC token of the scheduler account, its only invoker;
# no one else, human or workload, holds run.invoker on it.
resource "google_cloud_run_service_iam_member" "sweep_scheduler_invoker" {
  project  = var.project_id
  location = google_cloudfunctions2_function.sweep.location
  service  = google_cloudfunctions2_function.sweep.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.scheduler.email}"
}

resource "google_cloud_scheduler_job" "sweep" {
  name             = "${var.name_prefix}-sweep"
  project          = var.project_id
  region           = var.region
  description      = "Runs the sweep: queues stuck manifesting jobs and pipeline stages again."
  schedule         = var.sweep_schedule
  time_zone        = "Etc/UTC"
  attempt_deadline = "${local.sweep_timeout_s}s"

  # No retries: the next tick is the retry, and a sweep that failed half way leaves nothing the
  # next one does not find again.
  retry_config {
    retry_count = 0
  }

  http_target {
    http_method = "POST"
    # The run.app URL of the function's Cloud Run service, through which the scheduler's
    # requests count as internal (see ingress_settings above); the token's audience defaults to
    # it, which Cloud Run accepts.
    uri = google_cloudfunctions2_function.sweep.service_config[0].uri

    oidc_token {
      service_account_email = google_service_account.scheduler.email
    }
  }

  # The first tick comes within a minute of creation: everything a sweep uses is in place by then.
  depends_on = [
    google_project_service.enabled,
    google_cloud_run_service_iam_member.sweep_scheduler_invoker,
    google_project_iam_member.sweep_datastore_user,
    google_cloud_tasks_queue_iam_member.sweep_enqueues,
    google_service_account_iam_member.sweep_acts_as_tasks_invoker,
  ]
}
