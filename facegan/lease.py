"""One writer per folder: a lease object in a run (or dataset, or export) folder, taken and renewed
by conditional writes. A run has one trainer, a dataset one `prepare`, an export folder one export,
a folder of samples or translations one `facegan sample` or `translate apply`.

`lease.json` names its holder (a random id, host, pid) and when it expires. `RunLease.acquire`
creates it only if it is absent (S3 `If-None-Match: *`; a file lock in a local folder), or
replaces it only if it is unchanged since it was read (`If-Match: <etag>`) and its holder is gone:
expired, or a process of this host that no longer exists (a `kill -9` here needs no wait).
A heartbeat thread renews it every `ttl / 4` seconds the same way (through a storage outage it
keeps trying: nobody can write then); if a renewal finds the lease changed, it is `lost` and the
writer must stop without writing. Releasing deletes it. A second writer gets a `LeaseError`
naming the holder.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid

from facegan.errors import LeaseError, StorageError
from facegan.storage import Store

TTL_S = 120.0  # a crashed holder on another machine blocks the folder for at most this long
KEY = "lease.json"  # the lease's key in the folder it guards


class _Held(LeaseError):
    """A live process holds the lease (what a waiting writer waits out)."""


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


class Lease:
    """The lease on one folder; use as a context manager around the writing. `what` and `doing`
    name the folder and its writer in messages ("run", "trained"; "dataset", "prepared"), `instead`
    what a refused caller can do. A writer that `owns` the folder (a run, a dataset, an export)
    removes the temp files of interrupted writes there once it holds the lease; one that writes a
    few files into a folder of the user's (`facegan sample`, `translate apply`) touches nothing else.
    A writer that holds the folder only for a moment (the gallery's publish) `wait`s up to that many
    seconds for a live holder to end before it is refused."""

    def __init__(self, folder: Store, ttl: float = TTL_S, what: str = "run", doing: str = "trained",
                 instead: str = "train into another run", owns: bool = True, wait: float = 0.0) -> None:
        self.folder = folder
        self.ttl, self.wait = ttl, wait
        self.what, self.doing, self.instead, self.owns = what, doing, instead, owns
        self.me = {"holder": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid()}
        self.etag: str | None = None
        self._kept = False  # whether releasing leaves the folder, emptied (one of the user's that was there)
        self.lost: str | None = None  # why the lease was lost, if it was
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _body(self) -> bytes:
        now = time.time()
        return json.dumps({**self.me, "renewed": now, "expires": now + self.ttl}).encode()

    def acquire(self) -> Lease:
        """Take the lease (waiting up to `wait` seconds for a live holder), or raise LeaseError
        naming the live holder."""
        self._kept = not self.owns and self.folder.has_folder()  # the user's folder stays, even emptied
        deadline = time.monotonic() + self.wait
        while True:
            try:
                self._take()
                break
            except _Held as held:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise LeaseError(f"{held}{f' (waited {self.wait:.0f} s)' if self.wait else ''}") from None
                time.sleep(min(1.0, left))
        self._thread = threading.Thread(target=self._renew, name="facegan-lease", daemon=True)
        self._thread.start()
        if self.owns:
            self.folder.clean_temporaries()  # no other writer now: temp files of a killed one are orphans
        return self

    def _take(self) -> None:
        """One attempt: write the lease if it is absent or its holder is gone; _Held when a live
        process holds it."""
        where = self.folder.uri(KEY)
        for _ in range(3):  # the holder may release or renew between our read and write
            self.etag = self.folder.put_if(KEY, self._body(), None)
            if self.etag:
                break
            current = self.folder.get_versioned(KEY)
            if current is None:
                continue
            try:
                holder = json.loads(current[0])
            except (ValueError, RecursionError):
                holder = None
            if not (isinstance(holder, dict) and "holder" in holder):  # not a lease: damaged, or the user's file
                if not self.owns:  # in a folder of the user's: theirs, not ours to replace
                    raise LeaseError(f"{where}: already there and not a facegan lease; {self.instead}")
                holder = {}  # in a folder facegan owns: a damaged lease, expired
            expired = not isinstance(holder.get("expires"), (int, float)) or holder["expires"] < time.time()
            gone_here = holder.get("host") == socket.gethostname() and not _alive_here(holder)
            if not (expired or gone_here):
                left = holder["expires"] - time.time()
                raise _Held(
                    f"{where}: this {self.what} is being {self.doing} by another process (host "
                    f"{holder.get('host')}, pid {holder.get('pid')}); its lease runs {left:.0f} s more unless "
                    f"renewed. Wait for it to end, or {self.instead}")
            self.etag = self.folder.put_if(KEY, self._body(), current[1])
            if self.etag:
                break
        else:
            raise _Held(f"{where}: another process took this {self.what}'s lease at the same moment")

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            try:
                etag = self.folder.put_if(KEY, self._body(), self.etag)
            except StorageError:  # an outage: nobody can write meanwhile; the next renewal tells
                continue
            if etag is None:
                self.lost = f"{self.folder.uri(KEY)}: another process took over this {self.what}"
                return
            self.etag = etag

    def release(self) -> None:
        """Stop renewing and delete the lease (if it is still ours)."""
        self._stop.set()
        if self._thread:
            self._thread.join()
        if self.lost is None and self.etag:
            try:
                current = self.folder.get_versioned(KEY)
                if current and current[1] == self.etag:
                    self.folder.delete(KEY, keep_folder=self._kept)
            except StorageError:  # the store is away: the lease expires by itself
                pass

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
