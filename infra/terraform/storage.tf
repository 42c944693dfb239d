# Clients PUT their bytes here through signed URLs; every finalized object fires on_upload,
# which validates it and copies what it accepts into the media bucket.
resource "google_storage_bucket" "uploads" {
  #checkov:skip=CKV_GCP_62:Object reads and writes are recorded by Cloud Audit Logs (google_project_iam_audit_config.storage_data_access), the successor of bucket usage logs, with the caller identity.
  #checkov:skip=CKV_GCP_78:Uploads are transient inputs deleted by lifecycle after a few days; old versions would only keep rejected files around.
  name     = "${local.bucket_prefix}-uploads"
  project  = var.project_id
  location = var.region
  labels   = local.labels

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  # Accepted uploads already live in the media bucket; the copy here only has to outlast the
  # retries of a failed event.
  lifecycle_rule {
    condition {
      age = var.upload_retention_days
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      age = 1
    }
    action {
      type = "AbortIncompleteMultipartUpload"
    }
  }

  # Browsers PUT straight to a signed URL, so the preflight must allow the two headers the
  # signature covers: the content type and the size range the API signed.
  dynamic "cors" {
    for_each = length(var.web_origins) > 0 ? [var.web_origins] : []
    content {
      origin          = cors.value
      method          = ["PUT"]
      response_header = ["Content-Type", "x-goog-content-length-range"]
      max_age_seconds = 3600
    }
  }

  depends_on = [google_project_service.enabled]
}

# Normalised images, crops and thumbnails the backend derives. Clients read them through
# signed GET URLs; nothing here is public.
resource "google_storage_bucket" "media" {
  #checkov:skip=CKV_GCP_62:Object reads and writes are recorded by Cloud Audit Logs (google_project_iam_audit_config.storage_data_access), the successor of bucket usage logs, with the caller identity.
  name     = "${local.bucket_prefix}-media"
  project  = var.project_id
  location = var.region
  labels   = local.labels

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  # An overwrite or delete by a faulty run stays recoverable.
  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.media_noncurrent_retention_days
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  # The web app draws thumbnails on canvases and fetches images with fetch(), which need CORS
  # even on signed URLs.
  dynamic "cors" {
    for_each = length(var.web_origins) > 0 ? [var.web_origins] : []
    content {
      origin          = cors.value
      method          = ["GET", "HEAD"]
      response_header = ["Content-Type", "Content-Length", "ETag"]
      max_age_seconds = 3600
    }
  }

  depends_on = [google_project_service.enabled]
}

# Zipped sources of the functions, one object per distinct content.
resource "google_storage_bucket" "functions_source" {
  #checkov:skip=CKV_GCP_62:Object reads and writes are recorded by Cloud Audit Logs (google_project_iam_audit_config.storage_data_access), the successor of bucket usage logs, with the caller identity.
  # Project id (30) + prefix (20) + this suffix stays within the 63 characters of a bucket name.
  name     = "${local.bucket_prefix}-fn-source"
  project  = var.project_id
  location = var.region
  labels   = local.labels

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  versioning {
    enabled = true
  }

  # Each deployment writes a new object (its name is the content hash), so old ones only
  # matter for a rollback within the retention window.
  lifecycle_rule {
    condition {
      age = 90
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 7
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.enabled]
}

resource "google_storage_bucket_object" "functions_source" {
  # The name changes with the content, which is what makes the functions redeploy.
  name   = "functions/${filemd5(local.functions_source_zip)}.zip"
  bucket = google_storage_bucket.functions_source.name
  source = local.functions_source_zip
}

# Who read or wrote which object, for every bucket in the project. Usage logs (CKV_GCP_62)
# would need one more bucket and give less: audit entries carry the caller's identity.
resource "google_project_iam_audit_config" "storage_data_access" {
  count = var.storage_data_access_logs ? 1 : 0

  project = var.project_id
  service = "storage.googleapis.com"

  audit_log_config {
    log_type = "DATA_READ"
  }

  audit_log_config {
    log_type = "DATA_WRITE"
  }
}
