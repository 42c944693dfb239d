# Firestore security rules (firestore.rules): what signed-in clients may read directly, for
# listeners on their own jobs, manifests and projects. They bind client SDK requests only; the
# functions and the model service reach Firestore through IAM as their service accounts, which
# rules never apply to.
#
# The rules are parsed and compared with the code offline (tests/unit/test_firestore_rules.py,
# scripts/check_infra) but never executed there: Firebase compiles them when the ruleset is
# created, so a syntax or type error first shows up as a failed apply of this resource.
resource "google_firebaserules_ruleset" "firestore" {
  project = var.project_id

  source {
    files {
      name    = "firestore.rules"
      content = file("${path.module}/firestore.rules")
    }
  }

  # A ruleset is immutable: a change of the file makes a new one (and a new name, which
  # replaces the release: the provider has no in-place update of ruleset_name). Created first,
  # so a ruleset Firebase refuses to compile fails the apply while the old release and ruleset
  # stay in force; the old ruleset goes only after the release names the new one.
  lifecycle {
    create_before_destroy = true
  }

  depends_on = [google_project_service.enabled]
}

resource "google_firebaserules_release" "firestore" {
  project = var.project_id
  # The (default) database takes its rules from the release "cloud.firestore"; any other
  # database from "cloud.firestore/NAME".
  name = (
    google_firestore_database.main.name == "(default)"
    ? "cloud.firestore"
    : "cloud.firestore/${google_firestore_database.main.name}"
  )
  ruleset_name = "projects/${var.project_id}/rulesets/${google_firebaserules_ruleset.firestore.name}"
}
