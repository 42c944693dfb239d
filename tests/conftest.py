"""Session fixtures for the emulators and the whole local stack.

At most one set of emulators runs per test session: `emulators` and `local_stack` share one
LocalStack, and `local_stack` only adds the functions and the event bridge to it. The stack
lives under .local/pytest/ so it never disturbs a stack started with `infra.local.stack up`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# Before any Google client is imported: credential lookup must never probe a metadata server.
os.environ["NO_GCE_CHECK"] = "true"

from infra.local.stack import ROOT, LocalStack


def _clear_settings_cache() -> None:
    from shared.settings import get_settings

    get_settings.cache_clear()


class _SessionStack:
    """Starts what the session asks for, once, and undoes it (processes and environment)."""

    def __init__(self) -> None:
        self.stack: LocalStack | None = None
        self._saved_env: dict[str, str | None] = {}

    def emulators(self) -> LocalStack:
        if self.stack is None:
            worker = os.environ.get("PYTEST_XDIST_WORKER", "")
            stack = LocalStack(
                ROOT / ".local" / f"pytest{'-' + worker if worker else ''}",
                die_with_parent=True,  # a killed session must not leave emulators behind
            )
            stack.start(functions=False)
            self.stack = stack
            self._apply_env(stack.env)
        return self.stack

    def whole(self) -> LocalStack:
        stack = self.emulators()
        if not stack.functions_running:
            stack.start_functions()
            # The whole stack adds what the processes tell each other (task target URLs).
            self._apply_env(stack.env)
        return stack

    def close(self) -> None:
        if self.stack is not None:
            self.stack.stop()
            self.stack = None
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()
        _clear_settings_cache()

    def _apply_env(self, env: dict[str, str]) -> None:
        for key, value in env.items():
            self._saved_env.setdefault(key, os.environ.get(key))
            os.environ[key] = value
        _clear_settings_cache()


@pytest.fixture(scope="session")
def _session_stack() -> Iterator[_SessionStack]:
    holder = _SessionStack()
    try:
        yield holder
    finally:
        holder.close()


@pytest.fixture(scope="session")
def emulators(_session_stack: _SessionStack) -> LocalStack:
    """Firestore, Storage (buckets created) and Cloud Tasks (queues created), with os.environ
    pointing every client at them for the rest of the session."""
    return _session_stack.emulators()


@pytest.fixture
def clean_emulators(emulators: LocalStack) -> LocalStack:
    """The emulators, emptied before the test: no documents, empty buckets, empty queues."""
    if not emulators.can_reset_firestore:
        pytest.skip(
            f"FIRESTORE_EMULATOR_HOST={emulators.external_firestore} cannot be reset: only "
            "this session's own emulator and the official emulator can"
        )
    emulators.reset()
    return emulators


@pytest.fixture(scope="session")
def local_stack(_session_stack: _SessionStack) -> LocalStack:
    """The whole stack for e2e tests: the emulators (shared with `emulators`), the api and
    on_upload functions, and the event bridge. See `api_url` and `on_upload_url`."""
    return _session_stack.whole()
