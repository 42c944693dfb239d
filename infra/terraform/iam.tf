# One identity per function, each holding only what its code does. Storage access is granted
# on the buckets themselves, never project-wide, so neither function can touch other buckets
# in the project (Terraform state included).

resource "google_service_account" "api" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-api"
  display_name = "Framefork API function"
  description  = "Runs the api function: Firestore state, signed URLs, task dispatch."

  depends_on = [google_project_service.enabled]
}

resource "google_service_account" "on_upload" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-on-upload"
  display_name = "Framefork upload trigger"
  description  = "Runs on_upload and is the identity its Eventarc trigger delivers events with."

  depends_on = [google_project_service.enabled]
}

resource "google_service_account" "functions_build" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-fn-build"
  display_name = "Framefork functions build"
  description  = "Builds the functions' containers, instead of the default Compute Engine account."

  depends_on = [google_project_service.enabled]
}

# --- api -------------------------------------------------------------------------------------

# Firestore grants by project (or database): there is no narrower role for document access.
resource "google_project_iam_member" "api_datastore_user" {
  project = var.project_id
  role    = "roles/datastore.user"
  member  = "serviceAccount:${google_service_account.api.email}"
}

# Direct multipart uploads write into uploads; deletes and duplicates touch media.
resource "google_storage_bucket_iam_member" "api_uploads_objects" {
  bucket = google_storage_bucket.uploads.name
  role   = "roles/storage.objectAdmin"
  member = "serviceAccount:${google_service_account.api.email}"
}

resource "google_storage_bucket_iam_member" "api_media_objects" {
  bucket = google_storage_bucket.media.name
  role   = "roles/storage.objectAdmin"
  member = "serviceAccount:${google_service_account.api.email}"
}

# Signed URLs without a key file: the function asks IAM to sign (signBlob) as itself. Granted
# on its own account only, so it cannot sign as, or mint tokens for, any other identity.
resource "google_service_account_iam_member" "api_signs_as_itself" {
  service_account_id = google_service_account.api.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = "serviceAccount:${google_service_account.api.email}"
}

# --- on_upload -------------------------------------------------------------------------------

resource "google_project_iam_member" "on_upload_datastore_user" {
  project = var.project_id
  role    = "roles/datastore.user"
  member  = "serviceAccount:${google_service_account.on_upload.email}"
}

# Eventarc checks that the trigger's identity may receive events; the role is project-level only.
resource "google_project_iam_member" "on_upload_event_receiver" {
  project = var.project_id
  role    = "roles/eventarc.eventReceiver"
  member  = "serviceAccount:${google_service_account.on_upload.email}"
}

# objectUser: create, read, overwrite and delete objects, but no say over the bucket's IAM.
# In uploads, on_upload reads what arrived and deletes what it rejects or no longer needs.
resource "google_storage_bucket_iam_member" "on_upload_uploads_objects" {
  bucket = google_storage_bucket.uploads.name
  role   = "roles/storage.objectUser"
  member = "serviceAccount:${google_service_account.on_upload.email}"
}

# In media, it writes the normalised image and the thumbnail, again when an event repeats.
resource "google_storage_bucket_iam_member" "on_upload_media_objects" {
  bucket = google_storage_bucket.media.name
  role   = "roles/storage.objectUser"
  member = "serviceAccount:${google_service_account.on_upload.email}"
}

# Pub/Sub pushes each event to on_upload with an OIDC token minted for this account; projects
# created before April 2021 need the grant for that, later ones have it implicitly. Scoped to
# this one account rather than the project.
resource "google_service_account_iam_member" "pubsub_agent_tokens_for_on_upload" {
  service_account_id = google_service_account.on_upload.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = "serviceAccount:${google_project_service_identity.pubsub.email}"
}

# --- functions build -------------------------------------------------------------------------

resource "google_project_iam_member" "functions_build_log_writer" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = "serviceAccount:${google_service_account.functions_build.email}"
}

# The build reads the source that Cloud Functions stages into its own gcf-v2-sources-* bucket,
# whose name this configuration does not control; the condition keeps every other bucket out.
resource "google_project_iam_member" "functions_build_reads_sources" {
  project = var.project_id
  role    = "roles/storage.objectViewer"
  member  = "serviceAccount:${google_service_account.functions_build.email}"

  condition {
    title       = "function-sources-only"
    description = "Only the function source buckets."
    expression = join(" || ", [
      "resource.name.startsWith(\"projects/_/buckets/gcf-v2-sources-\")",
      "resource.name == \"projects/_/buckets/${google_storage_bucket.functions_source.name}\"",
      "resource.name.startsWith(\"projects/_/buckets/${google_storage_bucket.functions_source.name}/\")",
    ])
  }
}

resource "google_artifact_registry_repository_iam_member" "functions_build_pushes_images" {
  project    = var.project_id
  location   = google_artifact_registry_repository.functions.location
  repository = google_artifact_registry_repository.functions.name
  role       = "roles/artifactregistry.writer"
  member     = "serviceAccount:${google_service_account.functions_build.email}"
}
