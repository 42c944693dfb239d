"""Cloud Tasks emulator for the local stack (runs in .venv-tasks, never imported by the project).

gcloud-tasks-emulator 0.6.2 as shipped does not suit a shared development machine, so this
wrapper adjusts three things before starting it:
- its gRPC server binds every interface (`[::]`, ignoring the host it is given); here it binds
  the requested host only, and exits at once when the port is taken instead of idling unbound;
- it retries failed tasks forever by default; the stack always passes a cap;
- its queue threads hold a copy of the pending tasks, so purging a queue mid-sweep raised
  NotFound in the thread and silently stopped that queue for good; such tasks are now skipped.
It also gives each dispatch a deadline, as Cloud Tasks does, so a hung handler cannot block its
queue forever (the package calls urlopen without a timeout).
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import sys
import types
import warnings
from concurrent import futures
from urllib import request

# The pinned google libraries warn about Python end-of-life dates on import; noise in the log.
warnings.filterwarnings("ignore", category=FutureWarning)

import grpc  # noqa: E402
from gcloud_tasks_emulator import server  # noqa: E402
from google.api_core.exceptions import NotFound  # noqa: E402

logger = logging.getLogger("gcloud-tasks-emulator")


class LoopbackAPIThread(server.APIThread):  # type: ignore[misc]
    def __init__(self, state: server.QueueState, host: str, port: int) -> None:
        super().__init__(state, host, port)
        self._host = host

    def run(self) -> None:
        # gRPC turns SO_REUSEPORT on by default, which lets a second server share a taken port
        # and receive half the calls; a taken port must fail instead.
        self._httpd = grpc.server(
            futures.ThreadPoolExecutor(max_workers=4), options=[("grpc.so_reuseport", 0)]
        )
        server.add_CloudTasksServicer_to_server(server.Greeter(self._state), self._httpd)
        address = f"{self._host}:{self._port}"
        try:
            bound = self._httpd.add_insecure_port(address)
        except RuntimeError:
            bound = 0
        if not bound:
            logger.error("[API] cannot bind %s", address)
            # A thread cannot end the process by raising; without this the emulator would keep
            # running with no API and the caller would only see a health-check timeout.
            os._exit(1)
        self._httpd.start()
        logger.info("[API] Started API server at %s", address)


_submit_task = server.QueueState.submit_task


def _submit_task_skipping_purged(
    self: server.QueueState, task_name: str, force_run: bool = False
) -> object:
    try:
        return _submit_task(self, task_name, force_run)
    except NotFound:
        if force_run:  # RunTask from a client: the caller should hear about it
            raise
        logger.info("[TASKS] %s was purged or deleted before dispatch; skipped", task_name)
        return None


def _patch(dispatch_deadline_s: float) -> None:
    server.APIThread = LoopbackAPIThread
    server.QueueState.submit_task = _submit_task_skipping_purged
    server.request = types.SimpleNamespace(
        Request=request.Request,
        urlopen=functools.partial(request.urlopen, timeout=dispatch_deadline_s),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("-r", "--max-retries", type=int, required=True)
    parser.add_argument("--dispatch-deadline", type=float, default=600.0)
    parser.add_argument(
        "--queue",
        action="append",
        default=[],
        help="full queue name, projects/P/locations/L/queues/Q; repeatable",
    )
    args = parser.parse_args(argv)
    if args.max_retries < 0:
        parser.error("--max-retries must be 0 or more: unbounded retries never settle")

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    _patch(args.dispatch_deadline)

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # Server.run() stops its threads on KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    emulator = server.create_server(
        args.host, args.port, "127.0.0.1", 80, args.queue, args.max_retries
    )
    emulator.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
