"""What the benchmark scripts share: keeping clear of a developer's stack, machine facts."""

from __future__ import annotations

import importlib.metadata
import math
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

FOREIGN_STACK_ENV = (
    "FIRESTORE_EMULATOR_HOST",
    "STORAGE_EMULATOR_HOST",
    "CLOUD_TASKS_EMULATOR_HOST",
)
"""Variables a shell may carry from `infra.local.stack env`. Left in place they would point a
benchmark's stack and clients at another stack, whose data it would fill and whose setup it
would measure instead."""


def package_version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def command_output(*argv: str) -> str:
    try:
        return subprocess.run(
            argv, cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except OSError:
        return "?"


def write_atomically(path: Path, text: str) -> None:
    # Readers (and git) never see half a report if the run is killed while writing.
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(text)
    temporary.replace(path)


def json_safe(value: Any) -> Any:
    """Reports as strict JSON: NaN and infinities (a measurement not made) become null."""
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
