"""The REST API for manifests and assets (features M1–M3)."""
