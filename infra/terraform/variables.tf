variable "project_id" {
  description = "Google Cloud project that hosts everything below."
  type        = string
}

variable "region" {
  description = "Region of the functions, buckets, queues and the upload trigger. The uploads bucket and its trigger must share it, so there is one setting for both."
  type        = string
  default     = "europe-west1"
}

variable "firestore_location" {
  description = "Firestore location (a region such as europe-west1, or a multi-region such as eur3 or nam5). Fixed once the database exists. Empty means var.region."
  type        = string
  default     = ""
}

variable "name_prefix" {
  description = "Prefix of every resource name, so that two deployments can share a project."
  type        = string
  default     = "framefork"

  validation {
    # Service account ids allow 30 characters; the longest suffixes used here are "-on-upload",
    # "-run-stage" and "-scheduler" (10 characters each).
    condition     = can(regex("^[a-z][a-z0-9-]{1,18}[a-z0-9]$", var.name_prefix))
    error_message = "name_prefix must be 3-20 characters of lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "web_origins" {
  description = "Origins of the web apps, allowed by the API's CORS answers and by the uploads bucket's CORS rules (signed PUTs come straight from the browser)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for origin in var.web_origins : can(regex("^https?://[^/]+$", origin))])
    error_message = "Each web origin is a scheme and host (and port) with no path, e.g. https://app.example.com."
  }
}

variable "functions_source_zip" {
  description = "Path to the zip that scripts/package_functions builds (sources and requirements.txt). Empty means build/functions-source.zip at the repository root."
  type        = string
  default     = ""
}

variable "upload_retention_days" {
  description = "Days an object stays in the uploads bucket. on_upload copies what it accepts into the media bucket, so uploads are only kept long enough to retry a failed event."
  type        = number
  default     = 3

  validation {
    condition     = var.upload_retention_days >= 1
    error_message = "upload_retention_days must be at least 1: a retried upload event must still find its object."
  }
}

variable "media_noncurrent_retention_days" {
  description = "Days a replaced or deleted media object stays recoverable as a noncurrent version."
  type        = number
  default     = 30
}

variable "upload_max_bytes" {
  description = "Largest upload in bytes, given to both functions as FRAMEFORK_STORAGE__MAX_UPLOAD_BYTES: the API signs it into each upload URL's x-goog-content-length-range and on_upload refuses anything larger."
  type        = number
  default     = 10485760
}

variable "api_max_instances" {
  description = "Upper bound on api instances, which bounds cost and the Firestore write rate a burst can cause."
  type        = number
  default     = 20
}

variable "api_concurrency" {
  description = "Requests one api instance serves at once. Above 1 Cloud Functions requires a whole vCPU, which available_cpu provides."
  type        = number
  default     = 8
}

variable "on_upload_max_instances" {
  description = "Upper bound on on_upload instances; each decodes one image at a time, so this bounds memory spent on a burst of uploads."
  type        = number
  default     = 10
}

variable "run_stage_max_instances" {
  description = "Upper bound on run_stage instances, each running one pipeline task at a time, and so also the pipeline queue's max_concurrent_dispatches. Bounds memory, Gemini and Veo calls in flight, and cost of a burst of generations."
  type        = number
  default     = 20

  validation {
    condition     = var.run_stage_max_instances >= 1 && var.run_stage_max_instances <= 1000
    error_message = "run_stage_max_instances must be between 1 and 1000."
  }
}

variable "pipeline_concurrency" {
  description = "Model calls (keyframes, clip starts and polls) a project's stage makes at once, shared out among its chunk tasks; no task makes more. With run_stage_max_instances, it bounds the calls in flight against the Gemini and Veo quotas: instances × this."
  type        = number
  default     = 8

  validation {
    condition     = var.pipeline_concurrency >= 1 && var.pipeline_concurrency <= 64
    error_message = "pipeline_concurrency must be between 1 and 64 (FRAMEFORK_PIPELINE__CONCURRENCY's range)."
  }
}

variable "pipeline_chunk_scenes" {
  description = "Scenes per keyframes or clips task of the pipeline: a long video's stage runs as several tasks, which Cloud Tasks spreads over run_stage instances, and no task's work grows with the scene count."
  type        = number
  default     = 10

  validation {
    condition     = var.pipeline_chunk_scenes >= 1 && var.pipeline_chunk_scenes <= 200
    error_message = "pipeline_chunk_scenes must be between 1 and 200 (FRAMEFORK_PIPELINE__CHUNK_SCENES's range)."
  }
}

variable "sweep_schedule" {
  description = "When Cloud Scheduler runs the sweep that queues stuck manifesting jobs and pipeline stages again (unix-cron, UTC). Stuck work waits up to this long past its lease before it moves again."
  type        = string
  default     = "* * * * *"

  validation {
    # Five fields; Cloud Scheduler itself checks what each holds.
    condition     = length(split(" ", trimspace(var.sweep_schedule))) == 5
    error_message = "sweep_schedule must be a unix-cron expression of five fields separated by single spaces, e.g. \"* * * * *\"."
  }
}

variable "model_service_image" {
  description = "Container image of the model service, as cloudbuild.yaml pushes it: REGION-docker.pkg.dev/PROJECT/PREFIX-model-service/framefork-models:TAG (bentoml build, then bentoml containerize). A tag that changes per build makes Cloud Run deploy a new revision."
  type        = string

  validation {
    # An image in Artifact Registry, named with a tag or a digest: a bare name would mean
    # :latest, and Cloud Run would keep running whatever it resolved that to on the last deploy.
    condition     = can(regex("^[a-z0-9-]+-docker\\.pkg\\.dev/[^/]+/[^/]+/[^:@]+(:[A-Za-z0-9_.-]+|@sha256:[0-9a-f]{64})$", var.model_service_image))
    error_message = "model_service_image must be an Artifact Registry image with a tag or a digest, e.g. europe-west1-docker.pkg.dev/my-project/framefork-model-service/framefork-models:1a2b3c."
  }
}

variable "model_service_max_instances" {
  description = "Upper bound on model service instances, each holding one NVIDIA L4. It must fit the project's Cloud Run GPU quota in the region, and it bounds the GPU bill of a burst of manifesting jobs."
  type        = number
  default     = 2

  validation {
    condition     = var.model_service_max_instances >= 1
    error_message = "model_service_max_instances must be at least 1, or no job could ever run."
  }
}

variable "model_service_concurrency" {
  description = "Requests one model service instance accepts at once. At most the concurrency the BentoML service declares (model_service/service.py, traffic.concurrency), or Cloud Run would hand an instance requests that BentoML then queues or refuses."
  type        = number
  default     = 8

  validation {
    condition     = var.model_service_concurrency >= 1 && var.model_service_concurrency <= 1000
    error_message = "model_service_concurrency must be between 1 and 1000 (Cloud Run's limit)."
  }
}

variable "model_service_gpu_zonal_redundancy" {
  description = "Reserve GPU capacity in other zones of the region so that instances can start during a zonal outage. It costs more per GPU-second and needs the larger zonal-redundancy quota; without it a zonal outage only delays jobs, which Cloud Tasks retries."
  type        = bool
  default     = false
}

variable "storage_data_access_logs" {
  description = "Record reads and writes of objects in Cloud Audit Logs (the replacement for bucket usage logs). The setting owns the project's audit configuration of storage.googleapis.com; turn it off where that is managed elsewhere, or to save log volume."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Labels added to every resource that takes them."
  type        = map(string)
  default     = {}
}
