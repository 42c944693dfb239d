"""Pydantic models at every boundary: stored documents, HTTP bodies, event payloads."""
