terraform {
  # The release cloudbuild.yaml applies with, and that `terraform fmt` checks against.
  required_version = "~> 1.11"

  required_providers {
    # Patch releases only: a minor release of these providers can change defaults, so moving
    # to one is a reviewed change of this file and of .terraform.lock.hcl.
    google = {
      source  = "hashicorp/google"
      version = "~> 7.32.0"
    }
    # google_project_service_identity (creating service agents ahead of first use) is beta only.
    google-beta = {
      source  = "hashicorp/google-beta"
      version = "~> 7.32.0"
    }
  }

  # State lives in a bucket created once by hand (see README.md); bucket and prefix are given
  # to `terraform init -backend-config=...` so that one configuration serves every project.
  backend "gcs" {}
}
