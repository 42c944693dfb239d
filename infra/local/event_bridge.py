"""Storage-finalized CloudEvents for the local stack.

In Google Cloud, Eventarc posts `google.cloud.storage.object.v1.finalized` to on_upload for every
object written to the upload bucket. The storage emulator emits no events, so this process polls
the bucket and posts the same binary-mode CloudEvent for every new (name, generation).

Like Eventarc, delivery is at least once: a failed delivery (connection error or non-2xx) is
retried with capped exponential backoff and keeps its ce-id, and objects that were already in the
bucket when the bridge started are delivered too. on_upload is idempotent, so repeats are safe.

    python -m infra.local.event_bridge --bucket framefork-uploads --target http://127.0.0.1:8081/
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import requests
from google.cloud.storage import Client as StorageClient

FINALIZED = "google.cloud.storage.object.v1.finalized"

# The fields of the object resource that Cloud Storage puts in a finalized event's data.
_RESOURCE_FIELDS = (
    "kind",
    "id",
    "selfLink",
    "name",
    "bucket",
    "generation",
    "metageneration",
    "contentType",
    "timeCreated",
    "updated",
    "storageClass",
    "timeStorageClassUpdated",
    "size",
    "md5Hash",
    "mediaLink",
    "contentEncoding",
    "contentDisposition",
    "cacheControl",
    "metadata",
    "crc32c",
    "etag",
)

log = logging.getLogger("event_bridge")


def object_resource(properties: dict[str, Any]) -> dict[str, Any]:
    """The event data Cloud Storage sends: the object's JSON resource, int64s as strings."""
    resource = {k: properties[k] for k in _RESOURCE_FIELDS if properties.get(k) is not None}
    resource.setdefault("kind", "storage#object")
    for key in ("generation", "metageneration", "size"):
        if key in resource:
            resource[key] = str(resource[key])
    resource.setdefault(
        "id", f"{resource['bucket']}/{resource['name']}/{resource.get('generation', '')}"
    )
    return resource


def cloudevent_headers(resource: dict[str, Any], event_id: str) -> dict[str, str]:
    """Binary-mode CloudEvent headers, as Eventarc sets them for a storage trigger."""
    when = resource.get("updated") or resource.get("timeCreated")
    return {
        "ce-id": event_id,
        "ce-specversion": "1.0",
        "ce-type": FINALIZED,
        "ce-source": f"//storage.googleapis.com/projects/_/buckets/{resource['bucket']}",
        "ce-subject": f"objects/{resource['name']}",
        "ce-time": when or datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "content-type": "application/json",
    }


class Bridge:
    def __init__(
        self,
        client: StorageClient,
        bucket: str,
        target: str,
        *,
        max_attempts: int = 8,
        max_backoff_s: float = 10.0,
        timeout_s: float = 120.0,
        workers: int = 4,
    ) -> None:
        self._client = client
        self._bucket = bucket
        self._target = target
        self._max_attempts = max_attempts
        self._max_backoff_s = max_backoff_s
        self._timeout_s = timeout_s
        self._seen: set[tuple[str, str]] = set()
        self._stopping = threading.Event()
        self._http = requests.Session()
        # Deliveries run beside the poller so that one failing object, retrying with backoff,
        # neither delays the others nor stops new objects from being noticed.
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="deliver")

    def poll_once(self) -> int:
        """Schedule delivery of every object not seen before; returns how many."""
        current: set[tuple[str, str]] = set()
        fresh = 0
        for blob in self._client.list_blobs(self._bucket):
            # _properties is the resource exactly as the JSON API returned it.
            resource = object_resource(blob._properties)
            key = (resource["name"], resource.get("generation", ""))
            current.add(key)
            if key not in self._seen:
                fresh += 1
                self._pool.submit(self.deliver, resource)
        # Forget what is gone so the set stays as small as the bucket, wipes included.
        self._seen = current
        return fresh

    def deliver(self, resource: dict[str, Any]) -> bool:
        event_id = uuid.uuid4().hex  # one id per event, kept across retries, as Eventarc does
        label = f"gs://{resource['bucket']}/{resource['name']}#{resource.get('generation')}"
        for attempt in range(1, self._max_attempts + 1):
            if self._stopping.is_set():
                return False
            try:
                reply = self._http.post(
                    self._target,
                    json=resource,
                    headers=cloudevent_headers(resource, event_id),
                    timeout=self._timeout_s,
                )
                outcome = f"HTTP {reply.status_code}"
                if 200 <= reply.status_code < 300:
                    log.info("delivered %s id=%s attempt=%d %s", label, event_id, attempt, outcome)
                    return True
            except requests.RequestException as exc:
                outcome = f"{type(exc).__name__}: {exc}"
            delay = min(0.5 * 2 ** (attempt - 1), self._max_backoff_s)
            log.warning(
                "failed %s id=%s attempt=%d %s; retry in %.1fs",
                label,
                event_id,
                attempt,
                outcome,
                delay,
            )
            self._stopping.wait(delay)
        log.error("gave up %s id=%s after %d attempts", label, event_id, self._max_attempts)
        return False

    def run(self, interval_s: float) -> None:
        log.info("watching gs://%s, delivering to %s", self._bucket, self._target)
        while not self._stopping.is_set():
            try:
                self.poll_once()
            except Exception as exc:  # the bucket may not exist yet, or was just wiped
                log.warning("listing gs://%s failed: %s", self._bucket, exc)
            self._stopping.wait(interval_s)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def stop(self) -> None:
        self._stopping.set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Storage-finalized CloudEvents from polling.")
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--target", required=True, help="URL of the CloudEvent function")
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between polls")
    parser.add_argument("--max-attempts", type=int, default=8)
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    if not os.environ.get("STORAGE_EMULATOR_HOST"):
        parser.error("STORAGE_EMULATOR_HOST is not set: the bridge only watches the emulator")
    client = StorageClient(project=os.environ.get("GOOGLE_CLOUD_PROJECT", "framefork-local"))
    bridge = Bridge(client, args.bucket, args.target, max_attempts=args.max_attempts)
    signal.signal(signal.SIGTERM, lambda signum, frame: bridge.stop())
    signal.signal(signal.SIGINT, lambda signum, frame: bridge.stop())
    bridge.run(args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
