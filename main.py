"""Cloud Functions loads `main.py` from the root of the deployed source: re-export the entry
points that live in the functions package."""

from functions.main import api, on_upload, run_stage, sweep

__all__ = ["api", "on_upload", "run_stage", "sweep"]
