"""Cloud Scheduler for the local stack: POSTs to a target at a fixed interval, as the
Terraform job does to the sweep function every minute. A failed call is logged and the next
one comes at its time, as Cloud Scheduler's would.

    python -m infra.local.scheduler --target http://127.0.0.1:8083/ --interval 5
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

import requests

log = logging.getLogger("framefork.local.scheduler")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True)
    parser.add_argument("--interval", type=float, default=60.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    log.info("scheduling POST %s every %.1fs", args.target, args.interval)
    while not stopping.wait(args.interval):
        try:
            answer = requests.post(args.target, timeout=max(args.interval, 30))
            if answer.status_code != 200 or any(answer.json().values()):  # something moved
                log.info("%s %s", answer.status_code, answer.text.strip())
        except (requests.RequestException, ValueError) as error:
            log.warning("POST %s failed: %s", args.target, error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
