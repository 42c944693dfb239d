# One identity per workload (each function, the model service, the identity Cloud Tasks calls
# the model service and run_stage as, the one Cloud Scheduler calls the sweep as), each holding
# only what its code does. Storage access is granted on the buckets themselves, never
# project-wide, so none of them can touch other buckets in the project (Terraform state
# included).

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

resource "google_service_account" "run_stage" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-run-stage"
  display_name = "Framefork pipeline stages"
  description  = "Runs run_stage: generation stages, their media and the tasks that follow them."

  depends_on = [google_project_service.enabled]
}

resource "google_service_account" "sweep" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-sweep"
  display_name = "Framefork sweep"
  description  = "Runs sweep: finds stuck manifesting jobs and pipeline stages, queues them again or fails them."

  depends_on = [google_project_service.enabled]
}

resource "google_service_account" "model_service" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-models"
  display_name = "Framefork model service"
  description  = "Runs the model service on Cloud Run: manifesting jobs, detection, faces, reverse prompts."

  depends_on = [google_project_service.enabled]
}

# The identity Cloud Tasks signs each task's OIDC token with. It exists only to be the single
# invoker of the two task targets, the model service and run_stage: it runs nothing and holds
# nothing else.
resource "google_service_account" "tasks_invoker" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-invoker"
  display_name = "Framefork Cloud Tasks invoker"
  description  = "Identity of the OIDC tokens on manifesting and pipeline tasks; may invoke the model service and run_stage and nothing else."

  depends_on = [google_project_service.enabled]
}

# The identity Cloud Scheduler signs the sweep's OIDC token with: the sweep's only invoker. Apart
# from the tasks invoker, which would otherwise gain a third target it has no business calling,
# and from the sweep's own account, which need not be able to call itself.
resource "google_service_account" "scheduler" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-scheduler"
  display_name = "Framefork Cloud Scheduler invoker"
  description  = "Identity of the OIDC token on the sweep schedule's requests; may invoke sweep and nothing else."

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

# Cloud Tasks mints each task's OIDC token as the invoker account, on behalf of whoever created
# the task, and requires that creator to be allowed to act as the account
# (iam.serviceAccounts.actAs). Granted on that one account, so the API can have tokens made for
# the invoker and for no other identity.
resource "google_service_account_iam_member" "api_acts_as_tasks_invoker" {
  service_account_id = google_service_account.tasks_invoker.name
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.api.email}"
}

# Regenerating a keyframe calls the image model within the request (functions.tf). The Gemini
# key, and no other secret in the project.
resource "google_secret_manager_secret_iam_member" "api_reads_gemini_key" {
  project   = google_secret_manager_secret.gemini_api_key.project
  secret_id = google_secret_manager_secret.gemini_api_key.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.api.email}"
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

# --- run_stage -------------------------------------------------------------------------------

# Projects, their scenes, checkpoints, storyboards and the manifest snapshots they were made
# from; Firestore's roles stop at the project (or database).
resource "google_project_iam_member" "run_stage_datastore_user" {
  project = var.project_id
  role    = "roles/datastore.user"
  member  = "serviceAccount:${google_service_account.run_stage.email}"
}

# Reads the manifest's images (references for keyframes and clips) and the clips it stitches,
# writes keyframes, clips and the final video under pipeline/ in media. Names are content
# hashes, so a repeated task rewrites the same object, which takes delete as well as create:
# objectUser, on media only. Uploads never reach the pipeline.
resource "google_storage_bucket_iam_member" "run_stage_media_objects" {
  bucket = google_storage_bucket.media.name
  role   = "roles/storage.objectUser"
  member = "serviceAccount:${google_service_account.run_stage.email}"
}

# Gemini and Veo, for projects that use them: the Gemini key, and no other secret.
resource "google_secret_manager_secret_iam_member" "run_stage_reads_gemini_key" {
  project   = google_secret_manager_secret.gemini_api_key.project
  secret_id = google_secret_manager_secret.gemini_api_key.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.run_stage.email}"
}

# run_stage enqueues the following stages and the delayed tasks that poll clips, each with an
# OIDC token of the invoker account, which Cloud Tasks mints only for a creator that may act as
# it. On that one account, as for the API.
resource "google_service_account_iam_member" "run_stage_acts_as_tasks_invoker" {
  service_account_id = google_service_account.tasks_invoker.name
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.run_stage.email}"
}

# --- sweep -----------------------------------------------------------------------------------

# Reads the active jobs and running projects, and counts each requeue on the job or project
# (or fails it) and on the manifest; Firestore's roles stop at the project (or database). No
# storage, no secret: the sweep only moves state and queues tasks.
resource "google_project_iam_member" "sweep_datastore_user" {
  project = var.project_id
  role    = "roles/datastore.user"
  member  = "serviceAccount:${google_service_account.sweep.email}"
}

# The tasks it queues again carry an OIDC token of the invoker account, like the originals the
# API and run_stage created, which Cloud Tasks mints only for a creator that may act as it. On
# that one account, as for them.
resource "google_service_account_iam_member" "sweep_acts_as_tasks_invoker" {
  service_account_id = google_service_account.tasks_invoker.name
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.sweep.email}"
}

# --- model service ---------------------------------------------------------------------------

# Jobs, manifests and assets live in Firestore, whose roles stop at the project (or database).
resource "google_project_iam_member" "model_service_datastore_user" {
  project = var.project_id
  role    = "roles/datastore.user"
  member  = "serviceAccount:${google_service_account.model_service.email}"
}

# The engine reads the normalised images and writes crops, thumbnails and the contact sheet in
# media, rewriting them when a task is delivered again. It never touches uploads: on_upload has
# already copied every accepted upload into media.
resource "google_storage_bucket_iam_member" "model_service_media_objects" {
  bucket = google_storage_bucket.media.name
  role   = "roles/storage.objectUser"
  member = "serviceAccount:${google_service_account.model_service.email}"
}

# The Gemini key, and no other secret in the project.
resource "google_secret_manager_secret_iam_member" "model_service_reads_gemini_key" {
  project   = google_secret_manager_secret.gemini_api_key.project
  secret_id = google_secret_manager_secret.gemini_api_key.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.model_service.email}"
}

# Logs leave through stdout and stderr, which Cloud Run ships without any role; this one covers
# entries written through the Cloud Logging API (a Cloud Logging handler), so adding one needs
# no change here.
resource "google_project_iam_member" "model_service_log_writer" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = "serviceAccount:${google_service_account.model_service.email}"
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

# Veo clips are generated through Vertex AI with run_stage's own identity.
resource "google_project_iam_member" "run_stage_vertex" {
  project = var.project_id
  role    = "roles/aiplatform.user"
  member  = "serviceAccount:${google_service_account.run_stage.email}"
}
