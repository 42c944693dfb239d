"""What the benchmark scripts share: keeping clear of a developer's stack, machine facts."""

from __future__ import annotations

import importlib.metadata
import subprocess
from pathlib import Path

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
