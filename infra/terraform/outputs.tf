output "api_url" {
  description = "HTTPS endpoint of the API, for the apps' configuration."
  value       = google_cloudfunctions2_function.api.url
}

output "run_stage_url" {
  description = "Where pipeline tasks are delivered (FRAMEFORK_TASKS__PIPELINE_URL); internal ingress, invoked only by the tasks invoker."
  value       = local.run_stage_url
}

output "upload_bucket" {
  description = "Bucket that signed upload URLs point at (FRAMEFORK_STORAGE__UPLOAD_BUCKET)."
  value       = google_storage_bucket.uploads.name
}

output "media_bucket" {
  description = "Bucket of derived images and thumbnails (FRAMEFORK_STORAGE__MEDIA_BUCKET)."
  value       = google_storage_bucket.media.name
}

output "task_queues" {
  description = "Full names of the Cloud Tasks queues, by purpose."
  value = {
    manifesting = google_cloud_tasks_queue.manifesting.id
    pipeline    = google_cloud_tasks_queue.pipeline.id
  }
}

output "model_service_url" {
  description = "URL of the model service (internal ingress: reachable from this project's Cloud Tasks and VPC networks, not from the internet)."
  value       = google_cloud_run_v2_service.model_service.uri
}

output "gemini_api_key_secret" {
  description = "Secret Manager secret that holds the Gemini API key; add its value as a secret version (README.md)."
  value       = google_secret_manager_secret.gemini_api_key.id
}

output "service_accounts" {
  description = "Identities the workloads run as, the one Cloud Tasks invokes the model service and run_stage as, and the one Cloud Scheduler invokes the sweep as."
  value = {
    api           = google_service_account.api.email
    on_upload     = google_service_account.on_upload.email
    run_stage     = google_service_account.run_stage.email
    sweep         = google_service_account.sweep.email
    model_service = google_service_account.model_service.email
    tasks_invoker = google_service_account.tasks_invoker.email
    scheduler     = google_service_account.scheduler.email
  }
}

output "firestore_manifest_list_indexes" {
  description = "Keys of the generated manifest list indexes (equality filters, sort key, direction)."
  value       = sort(keys(google_firestore_index.manifest_list))
}
