provider "google" {
  project = var.project_id
  region  = var.region
}

provider "google-beta" {
  project = var.project_id
  region  = var.region
}

locals {
  firestore_location = var.firestore_location != "" ? var.firestore_location : var.region
  functions_source_zip = (
    var.functions_source_zip != "" ? var.functions_source_zip : "${path.module}/../../build/functions-source.zip"
  )

  # Project ids are globally unique, so prefixing bucket names with one keeps them unique too.
  bucket_prefix = "${var.project_id}-${var.name_prefix}"

  labels = merge({ app = "framefork", deployment = var.name_prefix }, var.labels)

  services = toset([
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudfunctions.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    # The schedule that runs the sweep (sweep.tf).
    "cloudscheduler.googleapis.com",
    "cloudtasks.googleapis.com",
    "eventarc.googleapis.com",
    # Firestore security rules (firestore_rules.tf): what clients may listen to.
    "firebaserules.googleapis.com",
    "firestore.googleapis.com",
    "iam.googleapis.com",
    # Signed URLs are signed through IAM signBlob: the functions hold no private key.
    "iamcredentials.googleapis.com",
    "logging.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    # The Gemini API key of the model service.
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
  ])
}

resource "google_project_service" "enabled" {
  for_each = local.services

  project = var.project_id
  service = each.value
  # Other workloads in the project may use the same APIs; destroying this stack must not
  # switch them off.
  disable_on_destroy = false
}

# Eventarc and Pub/Sub create their service agents lazily, on first use. Creating them here,
# before the first storage trigger, avoids the permission errors a fresh project gives while
# the agents do not exist yet.
resource "google_project_service_identity" "eventarc" {
  provider = google-beta

  project = var.project_id
  service = "eventarc.googleapis.com"

  depends_on = [google_project_service.enabled]
}

resource "google_project_service_identity" "pubsub" {
  provider = google-beta

  project = var.project_id
  service = "pubsub.googleapis.com"

  depends_on = [google_project_service.enabled]
}

# A service agent made through the API is not always granted its role automatically.
resource "google_project_iam_member" "eventarc_agent" {
  #checkov:skip=CKV_GCP_49:The member is Eventarc's own Google-managed service agent and the role is the one Google defines for it; no user or workload identity gains anything.
  project = var.project_id
  role    = "roles/eventarc.serviceAgent"
  member  = "serviceAccount:${google_project_service_identity.eventarc.email}"
}

# Cloud Storage publishes object events to Pub/Sub as its own service agent; Eventarc storage
# triggers need that agent to hold the publisher role.
data "google_storage_project_service_account" "gcs" {
  project = var.project_id

  depends_on = [google_project_service.enabled]
}

resource "google_project_iam_member" "gcs_agent_pubsub_publisher" {
  project = var.project_id
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
}

# The project number is part of every deterministic run.app URL (functions.tf, run_stage_url).
data "google_project" "this" {
  project_id = var.project_id

  depends_on = [google_project_service.enabled]
}
