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

# Pipeline stages (storyboard, keyframes, clips, stitch), one task per stage or scene. Stages
# are idempotent, so retries are safe; the backoff leaves room for provider rate limits
# (429) to clear.
resource "google_cloud_tasks_queue" "pipeline" {
  name     = "${var.name_prefix}-pipeline"
  project  = var.project_id
  location = var.region

  rate_limits {
    max_dispatches_per_second = 5
    max_concurrent_dispatches = 20
  }

  retry_config {
    max_attempts       = 8
    max_retry_duration = "7200s"
    min_backoff        = "5s"
    max_backoff        = "900s"
    max_doublings      = 5
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
