# Queues for the work that outlives a request. Cloud Tasks rate limits are what scale the
# workers out and protect what they call (the GPU service, Gemini and Veo quotas), so the
# limits live here rather than in code.

# Manifesting jobs (detection, faces, reverse prompts) for the model service. Each job keeps a
# GPU busy for a while, so few run at once; a failed job is retried a few times with growing
# pauses, then stays failed on its job document.
resource "google_cloud_tasks_queue" "manifesting" {
  name     = "${var.name_prefix}-manifesting"
  project  = var.project_id
  location = var.region

  rate_limits {
    max_dispatches_per_second = 2
    max_concurrent_dispatches = 4
  }

  retry_config {
    max_attempts       = 5
    max_retry_duration = "3600s"
    min_backoff        = "10s"
    max_backoff        = "600s"
    max_doublings      = 4
  }

  # Every dispatch and its outcome in Cloud Logging: jobs are few, and a stuck job is
  # diagnosed from these entries.
  stackdriver_logging_config {
    sampling_ratio = 1.0
  }

  depends_on = [google_project_service.enabled]
}

# Pipeline stages (storyboard, keyframes, clips, stitch) for run_stage, one task per stage of
# a project's run. A clip is never waited on: run_stage starts it, then enqueues a named task
# delayed by 10 s (POLL_DELAY_S in shared/pipeline/runner.py) that polls it, and so on until
# every clip is done. Retries therefore never stand in for polling; they cover a delivery that
# failed (an exception, Firestore or Cloud Storage trouble, a timed-out attempt) or a stage
# answered 503 because the one before it is not recorded yet. A provider's refusal, or its
# calls failing past their own retries, is recorded on the project and acknowledged.
resource "google_cloud_tasks_queue" "pipeline" {
  name     = "${var.name_prefix}-pipeline"
  project  = var.project_id
  location = var.region

  rate_limits {
    # Each task starts at most one stage of one project; this bounds the rate of calls into
    # the Gemini and Veo quotas a burst of generations can cause.
    max_dispatches_per_second = 5
    # No more tasks at once than run_stage has instances (one task each), so a dispatch never
    # meets a 429, which would also slow the whole queue down.
    max_concurrent_dispatches = var.run_stage_max_instances
  }

  # A task that runs out of retries leaves its project mid-stage until someone stops and
  # resumes it, so retries go on until both limits are spent (about an hour, some 16 attempts
  # when each fails fast). The first comes one poll interval after the failure, and the backoff
  # stops growing at 5 min: a poll chain or a stage held up by a passing fault picks up within
  # minutes of it clearing, rather than the quarter-hour a longer backoff would add to a render.
  retry_config {
    max_attempts       = 10
    max_retry_duration = "3600s"
    min_backoff        = "10s"
    max_backoff        = "300s"
    max_doublings      = 4
  }

  stackdriver_logging_config {
    sampling_ratio = 1.0
  }

  depends_on = [google_project_service.enabled]
}

# The API enqueues into these two queues and no others.
resource "google_cloud_tasks_queue_iam_member" "api_enqueues" {
  for_each = {
    manifesting = google_cloud_tasks_queue.manifesting
    pipeline    = google_cloud_tasks_queue.pipeline
  }

  project  = var.project_id
  location = each.value.location
  name     = each.value.name
  role     = "roles/cloudtasks.enqueuer"
  member   = "serviceAccount:${google_service_account.api.email}"
}

# run_stage enqueues the stages that follow and its delayed polls into the pipeline queue, and
# into no other.
resource "google_cloud_tasks_queue_iam_member" "run_stage_enqueues_pipeline" {
  project  = var.project_id
  location = google_cloud_tasks_queue.pipeline.location
  name     = google_cloud_tasks_queue.pipeline.name
  role     = "roles/cloudtasks.enqueuer"
  member   = "serviceAccount:${google_service_account.run_stage.email}"
}

# The sweep queues stuck jobs again into the manifesting queue and stuck stages into the
# pipeline queue, and into no other.
resource "google_cloud_tasks_queue_iam_member" "sweep_enqueues" {
  for_each = {
    manifesting = google_cloud_tasks_queue.manifesting
    pipeline    = google_cloud_tasks_queue.pipeline
  }

  project  = var.project_id
  location = each.value.location
  name     = each.value.name
  role     = "roles/cloudtasks.enqueuer"
  member   = "serviceAccount:${google_service_account.sweep.email}"
}
