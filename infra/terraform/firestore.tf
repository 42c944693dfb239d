resource "google_firestore_database" "main" {
  project     = var.project_id
  name        = "(default)"
  location_id = local.firestore_location
  type        = "FIRESTORE_NATIVE"

  # Seven days of versions to read or restore from after a bad write or a bad migration.
  point_in_time_recovery_enablement = "POINT_IN_TIME_RECOVERY_ENABLED"
  delete_protection_state           = "DELETE_PROTECTION_ENABLED"
  # `terraform destroy` forgets the database instead of deleting it: the state of every user
  # outlives any one deployment of the code.
  deletion_policy = "ABANDON"

  depends_on = [google_project_service.enabled]
}

locals {
  # Every manifest list query is one owner's manifests that are not deleted; it may narrow by
  # category, by status or by both, then pages with a range filter on one sort key, ordered
  # by that key. Firestore serves such a query only from a composite index holding exactly
  # those equality fields followed by the sort key in the requested direction, hence one
  # index per combination: 4 filter sets x 5 sort keys x 2 directions = 40.
  manifest_optional_filters = [[], ["category"], ["status"], ["category", "status"]]
  manifest_sort_fields = [
    "sort_updated_at",
    "sort_created_at",
    "sort_name",
    "sort_times_used",
    "sort_asset_count",
  ]
  sort_orders = { ASCENDING = "asc", DESCENDING = "desc" }

  # Keys read like the query: "category-status-name-desc", "updated_at-asc".
  manifest_list_indexes = {
    for combo in setproduct(local.manifest_optional_filters, local.manifest_sort_fields, keys(local.sort_orders)) :
    join("-", concat(combo[0], [trimprefix(combo[1], "sort_"), local.sort_orders[combo[2]]])) => {
      optional_filters = combo[0]
      sort_field       = combo[1]
      order            = combo[2]
    }
  }
}

resource "google_firestore_index" "manifest_list" {
  for_each = local.manifest_list_indexes

  project     = var.project_id
  database    = google_firestore_database.main.name
  collection  = "manifests"
  query_scope = "COLLECTION"

  fields {
    field_path = "owner_id"
    order      = "ASCENDING"
  }

  fields {
    field_path = "is_deleted"
    order      = "ASCENDING"
  }

  dynamic "fields" {
    for_each = each.value.optional_filters
    content {
      field_path = fields.value
      order      = "ASCENDING"
    }
  }

  # Firestore appends __name__ in the same direction, which makes the order total and keyset
  # pagination (range filter on the sort key, then the document id) exact.
  fields {
    field_path = each.value.sort_field
    order      = each.value.order
  }
}

# "Is this manifest used by a live project": manifest_id == and status in [...]. Firestore can
# merge single-field indexes for pure equality queries, but the merge slows down as projects
# accumulate; a composite index keeps the check, which guards every delete, one index scan.
resource "google_firestore_index" "projects_by_manifest_status" {
  project     = var.project_id
  database    = google_firestore_database.main.name
  collection  = "projects"
  query_scope = "COLLECTION"

  fields {
    field_path = "manifest_id"
    order      = "ASCENDING"
  }

  fields {
    field_path = "status"
    order      = "ASCENDING"
  }
}

# The project list (ProjectRepository.list_for_owner): one owner's projects that are not
# deleted, optionally of one status, newest first, paged with a range filter on
# sort_created_at. As with manifests, Firestore serves it only from an index holding exactly
# those equality fields followed by the sort key in that direction; the code never asks for
# the oldest first, so there is no ascending twin.
resource "google_firestore_index" "projects_by_owner_created" {
  project     = var.project_id
  database    = google_firestore_database.main.name
  collection  = "projects"
  query_scope = "COLLECTION"

  fields {
    field_path = "owner_id"
    order      = "ASCENDING"
  }

  fields {
    field_path = "is_deleted"
    order      = "ASCENDING"
  }

  fields {
    field_path = "sort_created_at"
    order      = "DESCENDING"
  }
}

# The same list narrowed to one status (?status=...).
resource "google_firestore_index" "projects_by_owner_status_created" {
  project     = var.project_id
  database    = google_firestore_database.main.name
  collection  = "projects"
  query_scope = "COLLECTION"

  fields {
    field_path = "owner_id"
    order      = "ASCENDING"
  }

  fields {
    field_path = "is_deleted"
    order      = "ASCENDING"
  }

  fields {
    field_path = "status"
    order      = "ASCENDING"
  }

  fields {
    field_path = "sort_created_at"
    order      = "DESCENDING"
  }
}

# Crops extracted from a source asset, in display order. Assets are only ever queried under
# one manifest (manifests/{id}/assets), never as a collection group, so the index is scoped to
# the collection.
resource "google_firestore_index" "assets_by_source" {
  project     = var.project_id
  database    = google_firestore_database.main.name
  collection  = "assets"
  query_scope = "COLLECTION"

  fields {
    field_path = "source_asset_id"
    order      = "ASCENDING"
  }

  fields {
    field_path = "sort_order"
    order      = "ASCENDING"
  }
}

# The manifesting jobs of one manifest (shared/repositories/jobs.py). "Is a job of this
# manifest still queued or running" (manifest_id == and status in [...]) guards every start,
# so it gets the same single-scan index as the live-project check above.
resource "google_firestore_index" "jobs_by_manifest_status" {
  project     = var.project_id
  database    = google_firestore_database.main.name
  collection  = "jobs"
  query_scope = "COLLECTION"

  fields {
    field_path = "manifest_id"
    order      = "ASCENDING"
  }

  fields {
    field_path = "status"
    order      = "ASCENDING"
  }
}

# "The latest job of this manifest" (manifest_id == ORDER BY created_at desc LIMIT 1), behind
# the progress endpoint. An equality filter followed by an order on another field has no
# fallback: Firestore refuses the query without this index.
resource "google_firestore_index" "jobs_by_manifest_created" {
  project     = var.project_id
  database    = google_firestore_database.main.name
  collection  = "jobs"
  query_scope = "COLLECTION"

  fields {
    field_path = "manifest_id"
    order      = "ASCENDING"
  }

  fields {
    field_path = "created_at"
    order      = "DESCENDING"
  }
}

# manifests/{id}/revisions/{revision} and projects/{id}/revisions/{revision}: one small
# document per guarded write, whose only lasting job is to serialise writers
# (docs/data-model.md). Each carries expire_at (a week after the write); this TTL policy has
# Firestore delete it some time after that, without a sweeper job or its cost. The policy names
# the collection group, so it covers the revisions of every manifest and every project.
resource "google_firestore_field" "revisions_expire_at" {
  project    = var.project_id
  database   = google_firestore_database.main.name
  collection = "revisions"
  field      = "expire_at"

  ttl_config {}

  # Nothing queries expire_at. Its values grow with time, which makes an index on it a write
  # hotspot, so the field is exempt from the automatic single-field indexes.
  index_config {}
}
