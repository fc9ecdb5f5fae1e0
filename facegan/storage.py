"""One storage interface for every read and write, keyed by URI.

`open_store(uri)` returns a `Store` rooted at `s3://bucket/prefix` (boto3) or at a local folder
(`file:///path` or a plain path; the embedded default). Keys are relative, `/`-separated. An
s3:// URI is read as the AWS CLI reads it: the bucket, then the key prefix as written ('#', '?'
and '%' are part of it); a file:// URI as RFC 8089 has it (percent escapes decoded; a '?' or '#'
in one is an error, as it would end the path).

Every write is atomic: a reader sees the whole object or none of it. Locally that is a temp
file in the same folder, fsync, then `os.replace`; on S3 a PUT or a completed multipart upload
is atomic by itself. Pointer objects (`latest.json`) are written by callers only after the
object they point to is complete.

Every failure is a `StorageError` whose one-line message names the URI and what is wrong.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import io
import json
import mimetypes
import os
import re
import shutil
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

from facegan.errors import StorageError  # noqa: F401 - exported here too

BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
MULTIPART_THRESHOLD = 16 * 1024 * 1024
DESKTOP_FILES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})  # what a file browser leaves in a folder




class Store(ABC):
    """A prefix in some storage where objects live under relative keys."""

    root: str
    remote: ClassVar[bool]  # reached over a network: worth caching what is read (e.g. dataset shards)

    def uri(self, key: str = "") -> str:
        """Full URI of `key` under this store."""
        key = key.strip("/")
        return f"{self.root.rstrip('/')}/{key}" if key else self.root

    def child(self, prefix: str) -> Store:
        """A store rooted at `prefix` under this one."""
        return open_store(self.uri(prefix))

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Write `data` to `key` atomically, replacing what was there."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """Read the whole object at `key`."""

    @abstractmethod
    def put_file(self, key: str, path: str | Path) -> None:
        """Upload a local file to `key` atomically."""

    @abstractmethod
    def get_file(self, key: str, path: str | Path) -> None:
        """Download `key` to a local file; the file appears whole or not at all."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether an object is at `key`."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Sorted keys (relative to the store) of all objects under `prefix`."""

    @abstractmethod
    def delete(self, key: str, keep_folder: bool = False) -> None:
        """Remove the object at `key`; a missing key is not an error. A local store removes the
        folders this leaves empty, its own too unless `keep_folder` (S3 has no folders)."""

    def has_folder(self) -> bool:
        """Whether the store's own folder is there (S3 has no folders: False)."""
        return False

    def room(self) -> int | None:
        """Bytes the store can still take: a local folder's free disk space; None where there is
        no such limit (S3)."""
        return None

    def clean_temporaries(self) -> list[str]:
        """Remove orphaned temp files of interrupted writes; returns their keys. (S3 has none:
        its uploads are atomic, and the bucket's lifecycle rule aborts stale multipart uploads.)"""
        return []

    @abstractmethod
    def get_versioned(self, key: str) -> tuple[bytes, str] | None:
        """(data, etag) of the object at `key`, or None when there is none."""

    @abstractmethod
    def put_if(self, key: str, data: bytes, etag: str | None) -> str | None:
        """Write `data` only if the object is unchanged: absent when `etag` is None, else still
        `etag`. Returns the new etag, or None when the condition failed (nothing written)."""

    def put_json(self, key: str, obj: Any) -> None:
        """Write `obj` as indented JSON."""
        self.put_bytes(key, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())

    def get_json(self, key: str) -> Any:
        """Read a JSON object; invalid JSON is a StorageError naming the URI."""
        data = self.get_bytes(key)
        try:
            return json.loads(data)
        except ValueError as exc:
            raise StorageError(f"{self.uri(key)}: not valid JSON ({exc})") from None
        except RecursionError:
            raise StorageError(f"{self.uri(key)}: not a facegan document (JSON nested too deep)") from None


def _umask() -> int:
    """This process's umask (read without changing it where /proc allows)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def desktop_file(key: str) -> bool:
    """Whether `key` names a file a desktop's file browser leaves in a folder it showed (macOS
    Finder's .DS_Store, Windows Explorer's Thumbs.db and desktop.ini): not the user's data, so a
    folder holding only these is as good as empty to the checks of what a folder holds."""
    return key.rsplit("/", 1)[-1] in DESKTOP_FILES


def make_folders(folder: Path) -> list[Path]:
    """`mkdir -p folder`; returns the folders it created, deepest first (for `remove_folders`)."""
    made = [p for p in [folder, *folder.parents] if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    return made


def remove_folders(made: list[Path]) -> None:
    """Remove the folders `make_folders` created, where they are still empty: a failed write
    leaves nothing behind."""
    for p in made:
        try:
            p.rmdir()
        except OSError:
            break


def local_write_error(line: str, folder: Path, exc: OSError) -> StorageError:
    """The one-line error of a local write that failed: `line` ("<what>: cannot write") and the
    OS's reason, or, where a file stands where `folder` or a folder above it must be, that file
    named first ("<file>: is a file, not a folder (<line>)")."""
    if exc.errno in (errno.EEXIST, errno.ENOTDIR):
        for p in [folder, *folder.parents]:
            if p.exists() and not p.is_dir():
                return StorageError(f"{p}: is a file, not a folder ({line})")
    return StorageError(f"{line} ({exc.strerror or exc})")


def _atomic_write(path: Path, write) -> None:
    """Temp file in the same folder, fsync, then rename over `path`: readers see the old or the
    new file, never half of one. The file gets the mode a plain open() would (0666 & ~umask). A
    failed write leaves neither the temp file nor the folders it made."""
    made = make_folders(path.parent)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~_umask())  # mkstemp makes 0600
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        remove_folders(made)
        raise


class LocalStore(Store):
    """A local folder standing in for S3."""

    remote = False

    def __init__(self, root: str | Path) -> None:
        self.path = Path(root).expanduser().resolve()
        self.root = str(self.path)

    def _p(self, key: str) -> Path:
        key = key.strip("/")
        if any(part == ".." for part in key.split("/")):
            raise StorageError(f"{self.uri(key)}: '..' is not allowed in keys")
        return self.path / key if key else self.path

    def room(self) -> int | None:
        there = next((p for p in (self.path, *self.path.parents) if p.exists()), self.path.anchor)
        try:
            return shutil.disk_usage(there).free
        except OSError:  # not a folder one can stat: what writes there says why
            return None

    def put_bytes(self, key: str, data: bytes) -> None:
        try:
            _atomic_write(self._p(key), lambda f: f.write(data))
        except OSError as exc:
            raise local_write_error(f"{self.uri(key)}: cannot write", self._p(key).parent, exc) from None

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._p(key).read_bytes()
        except FileNotFoundError:
            raise StorageError(f"{self.uri(key)}: no such object") from None
        except OSError as exc:
            raise StorageError(f"{self.uri(key)}: cannot read ({exc.strerror or exc})") from None

    def put_file(self, key: str, path: str | Path) -> None:
        try:
            with open(path, "rb") as src:
                _atomic_write(self._p(key), lambda f: shutil.copyfileobj(src, f, 1 << 20))
        except OSError as exc:
            raise local_write_error(f"{self.uri(key)}: cannot upload {path}", self._p(key).parent, exc) from None

    def get_file(self, key: str, path: str | Path) -> None:
        src = self._p(key)
        if not src.is_file():
            raise StorageError(f"{self.uri(key)}: no such object")
        try:
            with open(src, "rb") as s:
                _atomic_write(Path(path), lambda f: shutil.copyfileobj(s, f, 1 << 20))
        except OSError as exc:
            raise local_write_error(f"{self.uri(key)}: cannot download to {path}", Path(path).parent, exc) from None

    def has_folder(self) -> bool:
        return self.path.is_dir()

    def exists(self, key: str) -> bool:
        try:
            return self._p(key).is_file()
        except OSError as exc:  # a name too long, a loop of links, ...
            raise StorageError(f"{self.uri(key)}: cannot read ({exc.strerror or exc})") from None

    def list(self, prefix: str = "") -> list[str]:
        base = self._p(prefix)
        try:
            if base.is_file():
                if not prefix.strip("/"):  # the store's own folder is a file: it holds no keys, and takes none
                    raise StorageError(f"{base}: is a file, not a folder (cannot list it)")
                return [prefix.strip("/")]
            if not base.is_dir():
                return []
            keys = []
            for p in base.rglob("*"):
                if p.is_file() and not (p.name.startswith(".") and p.name.endswith(".tmp")):
                    keys.append(p.relative_to(self.path).as_posix())
        except OSError as exc:
            raise StorageError(f"{self.uri(prefix)}: cannot list ({exc.strerror or exc})") from None
        return sorted(keys)

    def delete(self, key: str, keep_folder: bool = False) -> None:
        path = self._p(key)
        path.unlink(missing_ok=True)
        for folder in [path.parent, *path.parent.parents]:  # no empty folders left behind, as on S3
            if folder == (self.path if keep_folder else self.path.parent) or not folder.is_relative_to(self.path):
                break
            try:
                folder.rmdir()
            except OSError:
                break

    def clean_temporaries(self) -> list[str]:
        """Remove the temp files of writes that a killed process left (`.NAME.XXXX.tmp`). Only for
        a writer that owns the folder (a run's lease holder): any temp file there is an orphan."""
        removed = []
        if self.path.is_dir():
            for p in self.path.rglob(".*.tmp"):
                p.unlink(missing_ok=True)
                removed.append(p.relative_to(self.path).as_posix())
        return removed

    def get_versioned(self, key: str) -> tuple[bytes, str] | None:
        try:
            data = self._p(key).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"{self.uri(key)}: cannot read ({exc.strerror or exc})") from None
        return data, hashlib.sha256(data).hexdigest()

    def put_if(self, key: str, data: bytes, etag: str | None) -> str | None:
        import fcntl

        path = self._p(key)
        made = []
        try:
            made = make_folders(path.parent)
            folder = os.open(path.parent, os.O_RDONLY)
            try:
                fcntl.flock(folder, fcntl.LOCK_EX)  # one conditional writer at a time, any process
                current = self.get_versioned(key)
                if (current[1] if current else None) != etag:
                    return None
                _atomic_write(path, lambda f: f.write(data))
            finally:
                os.close(folder)  # and so unlocked
        except OSError as exc:
            remove_folders(made)
            raise local_write_error(f"{self.uri(key)}: cannot write", self._p(key).parent, exc) from None
        return hashlib.sha256(data).hexdigest()


@functools.lru_cache(maxsize=16)
def _s3_client(pid: int, aws_environment: tuple[tuple[str, str], ...]):
    """The S3 client of this process for these AWS_* variables (credentials, endpoint, retries):
    made once, since making one loads botocore's models (~0.2 s) and every store opened on S3 made
    its own. boto3 clients are thread-safe; a forked child (`pid`) makes its own rather than share
    its parent's connections; other AWS_* variables make another. Retries: standard, 5 attempts
    with backoff, unless AWS's own settings say otherwise."""
    import boto3
    from botocore.config import Config

    environment = dict(aws_environment)
    retries = {}
    if "AWS_RETRY_MODE" not in environment:
        retries["mode"] = "standard"
    if "AWS_MAX_ATTEMPTS" not in environment:
        retries["max_attempts"] = 5
    config = Config(retries=retries, connect_timeout=5, read_timeout=60)
    return boto3.session.Session().client("s3", config=config)


class S3Store(Store):
    """`s3://bucket/prefix` through boto3 (endpoint from AWS_ENDPOINT_URL[_S3] when set)."""

    remote = True

    def __init__(self, uri: str) -> None:
        from boto3.s3.transfer import TransferConfig

        # as the AWS CLI reads it, not as urlparse would: "s3://b/runs/exp#2" is the prefix
        # "runs/exp#2", not "runs/exp" with a fragment (another run's folder)
        bucket, _, path = uri.removeprefix("s3://").partition("/")
        if not bucket:
            raise StorageError(f"{uri}: no bucket name in S3 URI")
        if not BUCKET_NAME.fullmatch(bucket):
            raise StorageError(f"{uri}: {bucket!r} is not a valid S3 bucket name "
                               "(3-63 lowercase letters, digits, '.' and '-')")
        self.bucket = bucket
        self.prefix = path.strip("/")
        self.root = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        self.client = _s3_client(os.getpid(), tuple(sorted((k, v) for k, v in os.environ.items()
                                                           if k.startswith("AWS_"))))
        self.transfer = TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_THRESHOLD
        )

    def _k(self, key: str) -> str:
        key = key.strip("/")
        return f"{self.prefix}/{key}" if self.prefix and key else (self.prefix or key)

    def _error(self, key: str, exc: Exception) -> StorageError:
        from botocore.exceptions import (
            ClientError,
            ConnectTimeoutError,
            EndpointConnectionError,
            NoCredentialsError,
            ParamValidationError,
        )

        where = self.uri(key)
        if isinstance(exc, ParamValidationError):
            return StorageError(f"{where}: invalid S3 request ({' '.join(str(exc).split())})")
        if isinstance(exc, NoCredentialsError):
            return StorageError(f"{where}: no AWS credentials found (set AWS_PROFILE or keys)")
        if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError)):
            return StorageError(f"{where}: S3 endpoint unreachable ({exc})", transient=True)
        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "NoSuchBucket":
                return StorageError(f"{where}: bucket {self.bucket!r} does not exist")
            if code in ("NoSuchKey", "404", "NotFound"):
                # HEAD requests answer a bare 404 for a missing bucket too: tell the two apart
                if self._bucket_missing():
                    return StorageError(f"{where}: bucket {self.bucket!r} does not exist")
                return StorageError(f"{where}: no such object")
            if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                return StorageError(f"{where}: access denied ({code})")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            transient = status >= 500 or code in ("SlowDown", "Throttling", "RequestTimeout", "InternalError")
            return StorageError(f"{where}: S3 error {code}: {exc}", transient=transient)
        return StorageError(f"{where}: {type(exc).__name__}: {' '.join(str(exc).split())}", transient=True)

    def _bucket_missing(self) -> bool:
        """True when the bucket is known not to exist (False when it exists or cannot be told)."""
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
            return False
        except ClientError as exc:
            return exc.response.get("Error", {}).get("Code", "") in ("404", "NoSuchBucket", "NotFound")
        except Exception:  # noqa: BLE001 - the endpoint went away meanwhile: the first error stands
            return False

    def _call(self, key: str, fn, *args, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(*args, **kwargs)
        except (BotoCoreError, ClientError, OSError) as exc:
            raise self._error(key, exc) from None

    @staticmethod
    def _content_type(key: str) -> str:
        # so that browsers render galleries served from S3 / CloudFront instead of downloading
        return mimetypes.guess_type(key)[0] or "application/octet-stream"

    def put_bytes(self, key: str, data: bytes) -> None:
        if len(data) >= MULTIPART_THRESHOLD:
            self._call(
                key, self.client.upload_fileobj, io.BytesIO(data), self.bucket, self._k(key),
                Config=self.transfer, ExtraArgs={"ContentType": self._content_type(key)},
            )
        else:
            self._call(
                key, self.client.put_object, Bucket=self.bucket, Key=self._k(key), Body=data,
                ContentType=self._content_type(key),
            )

    def get_bytes(self, key: str) -> bytes:
        buf = io.BytesIO()
        self._call(
            key, self.client.download_fileobj, self.bucket, self._k(key), buf,
            Config=self.transfer,
        )
        return buf.getvalue()

    def put_file(self, key: str, path: str | Path) -> None:
        if not Path(path).is_file():
            raise StorageError(f"{self.uri(key)}: cannot upload {path}: no such file")
        self._call(
            key, self.client.upload_file, str(path), self.bucket, self._k(key),
            Config=self.transfer, ExtraArgs={"ContentType": self._content_type(key)},
        )

    def get_file(self, key: str, path: str | Path) -> None:
        path, tmp = Path(path), None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            os.close(fd)
            self._call(
                key, self.client.download_file, self.bucket, self._k(key), tmp,
                Config=self.transfer,
            )
            os.replace(tmp, path)
        except OSError as exc:  # the local side (`_call` turns S3's into StorageErrors): a file in the way, ...
            raise local_write_error(f"{self.uri(key)}: cannot download to {path}", path.parent, exc) from None
        finally:
            if tmp:
                Path(tmp).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._k(key))
            return True
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchKey", "NotFound") and not self._bucket_missing():
                return False
            raise self._error(key, exc) from None
        except Exception as exc:  # connection problems, credentials
            raise self._error(key, exc) from None

    def list(self, prefix: str = "") -> list[str]:
        full = self._k(prefix)
        paginator = self.client.get_paginator("list_objects_v2")
        keys: list[str] = []
        strip = len(self.prefix) + 1 if self.prefix else 0

        def run() -> None:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    if full and not (key == full or key.startswith(full.rstrip("/") + "/")):
                        continue  # "runs/a" must not match "runs/ab/..."
                    keys.append(key[strip:])

        self._call(prefix, run)
        return sorted(keys)

    def delete(self, key: str, keep_folder: bool = False) -> None:  # noqa: ARG002 - S3 has no folders
        self._call(key, self.client.delete_object, Bucket=self.bucket, Key=self._k(key))

    def get_versioned(self, key: str) -> tuple[bytes, str] | None:
        from botocore.exceptions import ClientError

        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self._k(key))
            return obj["Body"].read(), obj["ETag"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code", "") in ("NoSuchKey", "404") and not self._bucket_missing():
                return None
            raise self._error(key, exc) from None
        except Exception as exc:  # noqa: BLE001 - connection problems, credentials
            raise self._error(key, exc) from None

    def put_if(self, key: str, data: bytes, etag: str | None) -> str | None:
        from botocore.exceptions import ClientError

        condition = {"IfNoneMatch": "*"} if etag is None else {"IfMatch": etag}  # S3 conditional writes
        try:
            out = self.client.put_object(Bucket=self.bucket, Key=self._k(key), Body=data,
                                         ContentType=self._content_type(key), **condition)
            return out["ETag"]
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "412", "409"):
                return None
            raise self._error(key, exc) from None
        except Exception as exc:  # noqa: BLE001
            raise self._error(key, exc) from None


CACHE_ENV = "FACEGAN_CACHE"


def cache_root(kind: str) -> Path:
    """This machine's cache folder for `kind` ("shards", "fid"): $FACEGAN_CACHE/kind, by default
    ~/.cache/facegan/kind."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "facegan")) / kind


def put_cached(folder: Path, name: str, data: bytes) -> None:
    """Write `name` into the local cache folder `folder`, atomically; one that cannot be written
    (a home folder the user may not write, a full disk) is a StorageError that says how to move
    the cache."""
    try:
        open_store(folder).put_bytes(name, data)
    except StorageError as exc:
        raise StorageError(f"{exc}; this is facegan's local cache: set {CACHE_ENV} to a folder you can write "
                           "(default ~/.cache/facegan)") from None


def store_class(uri: str | Path) -> type[Store]:
    """The Store class that serves `uri` (without connecting to anything)."""
    uri = str(uri)
    if not uri.strip():
        raise StorageError("the URI is empty; give s3://bucket/prefix or a folder")
    if uri.startswith("s3://"):
        return S3Store
    if "://" in uri and not uri.startswith("file://"):
        raise StorageError(f"{uri}: unsupported URI scheme (use s3://, file:// or a path)")
    return LocalStore


def is_remote(uri: str | Path) -> bool:
    """Whether `uri` names a remote store (see `Store.remote`)."""
    return store_class(uri).remote


def open_store(uri: str | Path) -> Store:
    """The store for `uri`: `s3://bucket/prefix`, `file:///path` or a plain folder path."""
    uri = str(uri)
    if store_class(uri) is S3Store:
        return S3Store(uri)
    if uri.startswith("file://"):
        parsed = urlsplit(uri)
        if parsed.netloc not in ("", "localhost"):  # file://tmp/x would silently mean /x
            raise StorageError(f"{uri}: a file:// URI needs an absolute path, e.g. file:///{parsed.netloc}{parsed.path}")
        if "?" in uri or "#" in uri:  # they would end its path: another folder than the one written
            raise StorageError(f"{uri}: a file:// URI's path ends at '?' or '#'; write them as %3F and %23, "
                               "or give the folder as a plain path")
        return LocalStore(unquote(parsed.path))
    return LocalStore(uri)


def canonical(uri: str | Path) -> str:
    """`uri` in one spelling per place (no I/O): `s3://bucket/prefix` without trailing slashes, a
    local folder as its absolute, resolved path."""
    uri = str(uri)
    if store_class(uri) is S3Store:
        return uri.rstrip("/")
    return str(open_store(uri).path)


def overlap(a: str | Path, b: str | Path) -> bool:
    """Whether two URIs name the same place or one lies inside the other."""
    a, b = canonical(a), canonical(b)
    return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")


def split_uri(uri: str) -> tuple[Store, str]:
    """Split an object URI into (store of its parent, key)."""
    uri = str(uri).rstrip("/")
    parent, _, name = uri.rpartition("/")
    if "/" not in uri and name:  # a bare file name: the current folder
        return open_store("."), name
    if not name or parent.endswith(":/") or (not parent and "://" in uri):
        raise StorageError(f"{uri}: not an object URI")
    return open_store(parent or "/"), name
