# The model service (model_service/, a BentoML service) on Cloud Run with one NVIDIA L4: it runs
# the manifesting jobs that the manifesting queue delivers to POST /tasks/run_job, and only
# that queue's invoker identity may call it.

locals {
  # Where infra/bento/setup_image writes the production model files while the image is built
  # (python -m model_service.export_models --out ...): the service loads them from the image
  # and never downloads weights at request time.
  model_service_model_dir = "/home/bentoml/models"

  # BentoML's HTTP server listens here (the image's entrypoint also follows $PORT, which Cloud
  # Run sets to this value).
  model_service_port = 3000

  # What the service reads through shared.settings (FRAMEFORK_ prefix, "__" between a group and
  # its field). The Gemini key is not here: it comes from Secret Manager (see the service).
  model_service_env = {
    GOOGLE_CLOUD_PROJECT  = var.project_id
    FRAMEFORK_ENVIRONMENT = "production"
    # Both names, so that the settings describe this deployment; the service only has access to
    # media, where every image it reads or writes lives.
    FRAMEFORK_STORAGE__UPLOAD_BUCKET = google_storage_bucket.uploads.name
    FRAMEFORK_STORAGE__MEDIA_BUCKET  = google_storage_bucket.media.name
    # The production backends (the defaults are the offline ones of the local stack).
    FRAMEFORK_MODELS__DETECTOR       = "onnx-yolo"
    FRAMEFORK_MODELS__FACES          = "insightface-buffalo-l"
    FRAMEFORK_MODELS__DESCRIBER      = "gemini"
    FRAMEFORK_MODELS__YOLO_ONNX_PATH = "${local.model_service_model_dir}/yolo11n.onnx"
    FRAMEFORK_MODELS__BUFFALO_DIR    = "${local.model_service_model_dir}/buffalo_l"
  }
}

# Images of the model service, pushed by cloudbuild.yaml before Terraform deploys them. Apart
# from the functions' repository because these images are large (CUDA, cuDNN, onnxruntime-gpu
# and the model files: several GB each) and kept fewer.
resource "google_artifact_registry_repository" "model_service" {
  #checkov:skip=CKV_GCP_84:Images hold the service code, its dependencies and public pretrained weights, no user data; Google-managed encryption covers them, and a customer-managed key would make every build and every cold start depend on Cloud KMS.
  project       = var.project_id
  location      = var.region
  repository_id = "${var.name_prefix}-model-service"
  format        = "DOCKER"
  description   = "Container images of the Framefork model service (BentoML, GPU)."
  labels        = local.labels

  # Cloud Run starts new instances from the image of the serving revision, so the newest images
  # stay (a rollback target included); older ones go after a month.
  cleanup_policy_dry_run = false

  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = 5
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

# The Gemini API key (FRAMEFORK_MODELS__GEMINI_API_KEY, which has no default). Terraform creates
# the secret but never holds its value, which would otherwise sit in plain text in the state:
# the value is added out of band as a secret version (infra/terraform/README.md).
resource "google_secret_manager_secret" "gemini_api_key" {
  project   = var.project_id
  secret_id = "${var.name_prefix}-gemini-api-key"
  labels    = local.labels

  replication {
    auto {}
  }

  depends_on = [google_project_service.enabled]
}

resource "google_cloud_run_v2_service" "model_service" {
  name        = "${var.name_prefix}-models"
  project     = var.project_id
  location    = var.region
  description = "Framefork model service: manifesting jobs (detection, faces, reverse prompts) on an NVIDIA L4."
  labels      = local.labels

  # Only callers inside Google's network for this project reach it; Cloud Tasks in the same
  # project counts as such when it calls the run.app URL. Nothing on the internet can, whatever
  # IAM says.
  ingress = "INGRESS_TRAFFIC_INTERNAL_ONLY"

  # The service holds no state (jobs live in Firestore, images in media) and redeploys from its
  # image, so `terraform destroy` or a replacement may remove it.
  deletion_protection = false

  template {
    service_account = google_service_account.model_service.email
    labels          = local.labels

    # One manifesting job runs inside one request, so requests are long: 900 s, the traffic
    # timeout the BentoML service declares.
    timeout                          = "900s"
    max_instance_request_concurrency = var.model_service_concurrency
    execution_environment            = "EXECUTION_ENVIRONMENT_GEN2"

    # Scale to zero between jobs: an idle L4 costs as much as a busy one. The first job after a
    # quiet period pays for the cold start (image pull, model load).
    scaling {
      min_instance_count = 0
      max_instance_count = var.model_service_max_instances
    }

    node_selector {
      accelerator = "nvidia-l4"
    }

    gpu_zonal_redundancy_disabled = !var.model_service_gpu_zonal_redundancy

    containers {
      image = var.model_service_image

      ports {
        container_port = local.model_service_port
      }

      resources {
        # One GPU, as the service declares (resources={"gpu": 1}). 4 vCPU and 16 GiB are Cloud
        # Run's minimum beside a GPU, and enough for decoding images next to the models.
        limits = {
          cpu              = "4"
          memory           = "16Gi"
          "nvidia.com/gpu" = "1"
        }
        # CPU always allocated, never throttled outside requests: Cloud Run requires it beside a
        # GPU (the instance is billed whole while it lives anyway).
        cpu_idle = false
        # Model loading at start-up is CPU-bound (onnxruntime session setup).
        startup_cpu_boost = true
      }

      dynamic "env" {
        for_each = local.model_service_env
        content {
          name  = env.key
          value = env.value
        }
      }

      # Resolved by Cloud Run when an instance starts, as the service's own identity, so the key
      # is neither in the image, nor in Terraform state, nor in the revision's configuration.
      # "latest" picks up a rotated key at the next cold start.
      env {
        name = "FRAMEFORK_MODELS__GEMINI_API_KEY"
        value_source {
          secret_key_ref {
            secret  = google_secret_manager_secret.gemini_api_key.secret_id
            version = "latest"
          }
        }
      }

      # Ready once BentoML has built the service, i.e. loaded the models. Cloud Run allows at
      # most 240 s (period x threshold) for this.
      startup_probe {
        period_seconds    = 10
        timeout_seconds   = 5
        failure_threshold = 24

        http_get {
          path = "/readyz"
          port = local.model_service_port
        }
      }

      # A job runs in a worker thread, so the event loop keeps answering this while it works; an
      # instance that stops answering is wedged and is restarted, and its job is redelivered.
      liveness_probe {
        period_seconds    = 30
        timeout_seconds   = 5
        failure_threshold = 3

        http_get {
          path = "/livez"
          port = local.model_service_port
        }
      }
    }
  }

  traffic {
    type    = "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST"
    percent = 100
  }

  # A revision starts only if its identity can read the secret, and its first job needs the
  # other grants.
  depends_on = [
    google_secret_manager_secret_iam_member.model_service_reads_gemini_key,
    google_project_iam_member.model_service_datastore_user,
    google_storage_bucket_iam_member.model_service_media_objects,
  ]
}

# The identity check of keyframes calls the faces API with an ID token of the caller's own
# account: run_stage for the keyframes stage and regenerations, the API for uploaded keyframes.
# Both may invoke the service and nothing else of it. With internal ingress their requests must
# also leave through the VPC network (Direct VPC egress or a connector) to count as internal;
# otherwise the check records "unchecked" and flags the scene, it never passes it.
resource "google_cloud_run_v2_service_iam_member" "model_service_run_stage_invoker" {
  project  = google_cloud_run_v2_service.model_service.project
  location = google_cloud_run_v2_service.model_service.location
  name     = google_cloud_run_v2_service.model_service.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.run_stage.email}"
}

resource "google_cloud_run_v2_service_iam_member" "model_service_api_invoker" {
  project  = google_cloud_run_v2_service.model_service.project
  location = google_cloud_run_v2_service.model_service.location
  name     = google_cloud_run_v2_service.model_service.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.api.email}"
}

# Cloud Tasks calls the service with an OIDC token of the invoker account (the API names it on
# every task: FRAMEFORK_TASKS__INVOKER_SERVICE_ACCOUNT). That account is the only member that
# may invoke it; no one else, human or workload, holds run.invoker on it.
resource "google_cloud_run_v2_service_iam_member" "model_service_tasks_invoker" {
  project  = google_cloud_run_v2_service.model_service.project
  location = google_cloud_run_v2_service.model_service.location
  name     = google_cloud_run_v2_service.model_service.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.tasks_invoker.email}"
}
