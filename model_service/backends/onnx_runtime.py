"""ONNX Runtime sessions for every ONNX backend: providers from a preference list, options.

The GPU image installs onnxruntime-gpu and the CPU image onnxruntime; the same code runs on
both because providers are chosen from what the installed build offers, in preference order,
and the provider a session really got is logged (onnxruntime falls back to the CPU silently
when CUDA libraries are missing, so the request alone proves nothing).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnxruntime as ort

log = logging.getLogger(__name__)

PREFERRED_PROVIDERS: tuple[str, ...] = ("CUDAExecutionProvider", "CPUExecutionProvider")
THREADS_ENV = "FRAMEFORK_MODELS__ONNX_THREADS"
"""Intra-op threads per session when the caller passes none (the name the model settings
group would give it); unset or 0 lets onnxruntime use one per physical core. Several sessions
share one host, so a deployment may lower it."""

# Dynamic batch sizes would start an exhaustive cuDNN search on every new input shape; the
# heuristic choice is nearly as fast and keeps the first request of each batch size cheap.
_PROVIDER_OPTIONS: dict[str, dict[str, str]] = {
    "CUDAExecutionProvider": {"cudnn_conv_algo_search": "HEURISTIC"},
}


def available_providers() -> list[str]:
    """Execution providers of the installed onnxruntime build, best first."""
    return list(ort.get_available_providers())


def choose_providers(preference: Sequence[str] | None = None) -> list[str]:
    """The providers of `preference` (default CUDA, then CPU) that this build offers, in
    the preferred order. Raises RuntimeError when none is offered."""
    wanted = list(preference) if preference is not None else list(PREFERRED_PROVIDERS)
    have = set(available_providers())
    chosen = [name for name in wanted if name in have]
    if not chosen:
        raise RuntimeError(
            f"none of the execution providers {wanted} is available; this onnxruntime "
            f"offers {sorted(have)}"
        )
    return chosen


def intra_op_threads(threads: int | None = None) -> int:
    """Threads for one session: the argument, else FRAMEFORK_MODELS__ONNX_THREADS, else 0
    (one per physical core)."""
    if threads is not None:
        return max(0, threads)
    raw = os.environ.get(THREADS_ENV, "").strip()
    try:
        return max(0, int(raw)) if raw else 0
    except ValueError as exc:
        raise ValueError(f"{THREADS_ENV} must be an integer, not {raw!r}") from exc


def session_options(*, threads: int | None = None) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = intra_op_threads(threads)
    # Detection graphs are chains of convolutions: parallel branches gain nothing, and a
    # second pool per session would only compete with the intra-op threads for the cores.
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    return options


def create_session(
    model: str | bytes | Path,
    *,
    providers: Sequence[str] | None = None,
    threads: int | None = None,
) -> ort.InferenceSession:
    """An InferenceSession on the best available provider of `providers` (default CUDA,
    then CPU) for a model file path or the model's bytes. Logs the provider it runs on."""
    chosen = choose_providers(providers)
    source: str | bytes = str(model) if isinstance(model, Path) else model
    label = f"<{len(source)} bytes>" if isinstance(source, bytes) else Path(source).name
    with_options: list[Any] = [
        (name, _PROVIDER_OPTIONS[name]) if name in _PROVIDER_OPTIONS else name for name in chosen
    ]
    session = ort.InferenceSession(
        source, sess_options=session_options(threads=threads), providers=with_options
    )
    running = session.get_providers()
    if running and running[0] != chosen[0]:
        log.warning("onnxruntime: %s asked for %s but runs on %s", label, chosen[0], running[0])
    log.info("onnxruntime: %s on %s", label, running[0] if running else "no provider")
    return session
