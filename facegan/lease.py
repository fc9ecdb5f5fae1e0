"""One trainer per run: a lease object in the run folder, taken and renewed by conditional writes.

`lease.json` names its holder (a random id, host, pid) and when it expires. `RunLease.acquire`
creates it only if it is absent (S3 `If-None-Match: *`; a file lock in a local folder), or
replaces it only if it is unchanged since it was read (`If-Match: <etag>`) and its holder is gone:
expired, or a process of this host that no longer exists (a `kill -9` here needs no wait).
A heartbeat thread renews it every `ttl / 4` seconds the same way (through a storage outage it
keeps trying: nobody can write then); if a renewal finds the lease changed, it is `lost` and the
trainer must stop without writing. Releasing deletes it. A second trainer gets a `LeaseError`
naming the holder.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid

from facegan import runfolder
from facegan.errors import LeaseError, StorageError
from facegan.storage import Store

TTL_S = 120.0  # a crashed holder on another machine blocks the run for at most this long


def _alive_here(holder: dict) -> bool:
    """Whether the holder is a live process on this host (False when it is elsewhere: unknown)."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process, alive
        return True
    return True


class RunLease:
    """The lease on one run folder; use as a context manager around training."""

    def __init__(self, run: Store, ttl: float = TTL_S) -> None:
        self.run = run
        self.ttl = ttl
        self.me = {"holder": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid()}
        self.etag: str | None = None
        self.lost: str | None = None  # why the lease was lost, if it was
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _body(self) -> bytes:
        now = time.time()
        return json.dumps({**self.me, "renewed": now, "expires": now + self.ttl}).encode()

    def acquire(self) -> RunLease:
        """Take the lease, or raise LeaseError naming the live holder."""
        where = self.run.uri(runfolder.LEASE)
        for _ in range(3):  # the holder may release or renew between our read and write
            self.etag = self.run.put_if(runfolder.LEASE, self._body(), None)
            if self.etag:
                break
            current = self.run.get_versioned(runfolder.LEASE)
            if current is None:
                continue
            try:
                holder = json.loads(current[0])
            except ValueError:
                holder = {}
            expired = not isinstance(holder.get("expires"), (int, float)) or holder["expires"] < time.time()
            gone_here = holder.get("host") == socket.gethostname() and not _alive_here(holder)
            if not (expired or gone_here):
                left = holder["expires"] - time.time()
                raise LeaseError(
                    f"{where}: this run is being trained by another process (host {holder.get('host')}, "
                    f"pid {holder.get('pid')}); its lease runs {left:.0f} s more unless renewed. "
                    "Wait for it to end, or train into another run")
            self.etag = self.run.put_if(runfolder.LEASE, self._body(), current[1])
            if self.etag:
                break
        else:
            raise LeaseError(f"{where}: another process took this run's lease at the same moment")
        self._thread = threading.Thread(target=self._renew, name="facegan-lease", daemon=True)
        self._thread.start()
        self.run.clean_temporaries()  # no other writer now: temp files of a killed one are orphans
        return self

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            try:
                etag = self.run.put_if(runfolder.LEASE, self._body(), self.etag)
            except StorageError:  # an outage: nobody can write meanwhile; the next renewal tells
                continue
            if etag is None:
                self.lost = f"{self.run.uri(runfolder.LEASE)}: another process took over this run"
                return
            self.etag = etag

    def release(self) -> None:
        """Stop renewing and delete the lease (if it is still ours)."""
        self._stop.set()
        if self._thread:
            self._thread.join()
        if self.lost is None and self.etag:
            try:
                current = self.run.get_versioned(runfolder.LEASE)
                if current and current[1] == self.etag:
                    self.run.delete(runfolder.LEASE)
            except StorageError:  # the store is away: the lease expires by itself
                pass

    def __enter__(self) -> RunLease:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
