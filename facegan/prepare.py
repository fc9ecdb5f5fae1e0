"""Making a dataset: raw face images (folder or .zip) -> uint8 shards + manifest (see facegan.data).

`prepare()` turns raw CelebA (the `img_align_celeba/` folder or its .zip of 178x218 JPEGs), an
already-cropped folder (Udacity's `processed_celeba_small/celeba/`) or any folder of face
images into that layout, in parallel across cores. Aligned CelebA frames are cropped to the
face box `CELEBA_FACE_BOX`; any other image is centre-cropped to a square. Crops are resized
with an antialiasing filter (Lanczos). Bad files are converted where safe or skipped, and
every skip is listed in the manifest with its reason.

Rebuilding a dataset in place never mixes two builds: each build writes its shards under new
names (`shard-<build>-NNNNN.npy`), switches `manifest.json` last, and only then removes the
previous build's shards. A reader sees the old dataset or the new one; a failed or killed
rebuild leaves the old one intact. One `prepare` writes a dataset at a time: it holds the
folder's lease (`facegan.lease`, the run's one-writer guarantee) from its first write to its
last, and a second one is refused in one line naming the first. It writes only into an empty
folder, an earlier dataset, or what a stopped `prepare` left (names a dataset has): a folder
holding anything else (a run, the raw images themselves) is refused before a byte is written.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import time
import uuid
import warnings
import zipfile
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import simplejpeg
from PIL import Image, UnidentifiedImageError

from facegan import attributes as attrs
from facegan import folders
from facegan.data import ATTRIBUTES_NAME, FORMAT, MANIFEST, SHARD_NAME, VERSION, manifest_id, read_manifest
from facegan.errors import DatasetError, LeaseError, StorageError, foreign_files
from facegan.lease import KEY as LEASE_KEY
from facegan.lease import Lease
from facegan.storage import Store, canonical, desktop_file, is_remote, open_store, split_uri

SHARD_SIZE = 8192
CELEBA_SIZE = (178, 218)
# Face box (left, top, right, bottom) for aligned CelebA: a 128x128 square centred on the
# face (x centre 89, y centre 121), the usual crop for 64 px CelebA GAN training.
CELEBA_FACE_BOX = (25, 57, 153, 185)
MAX_PIXELS = 50_000_000  # far above any face photo; a bigger image is refused before decoding
MAX_FILE_BYTES = 64 << 20  # likewise: a bigger file (a 30 GB sparse "image", a zip bomb) is listed, not read
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
ROWS_NAMED = 20  # rows of the attribute table without an image: how many the manifest names (all are counted)


# ------------------------------------------------------------------ preparing


def crop_box(size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The crop for an image of `size` (w, h): the face box on aligned CelebA, else a centre square."""
    if size == CELEBA_SIZE:
        return CELEBA_FACE_BOX
    w, h = size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return (left, top, left + side, top + side)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert the modes that can be converted safely to RGB; raise ValueError otherwise."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("L", "CMYK", "YCbCr", "P", "LA", "PA", "RGBA", "RGBa", "1"):
        if mode in ("P", "PA") and "transparency" in img.info:
            img = img.convert("RGBA")
            mode = "RGBA"
        if mode in ("RGBA", "LA", "RGBa"):
            background = Image.new("RGB", img.size, (255, 255, 255))
            background.paste(img.convert("RGBA"), mask=img.convert("RGBA").getchannel("A"))
            return background
        return img.convert("RGB")
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.uint32)
        top = 65535 if mode.startswith("I;16") or arr.max() > 255 else 255
        arr8 = (arr.astype(np.float64) * 255.0 / top).round().clip(0, 255).astype(np.uint8)
        return Image.fromarray(arr8, "L").convert("RGB")
    raise ValueError(f"unsupported image mode {mode}")


def _open(data: bytes, jpeg_hint: bool) -> Image.Image:
    with warnings.catch_warnings():  # the caller checks the size itself, against MAX_PIXELS
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return _open_image(data, jpeg_hint)


def _open_image(data: bytes, jpeg_hint: bool) -> Image.Image:
    if jpeg_hint:  # probing only the JPEG plugin is ~18% faster; a mislabeled file still opens below
        try:
            return Image.open(io.BytesIO(data), formats=("JPEG",))
        except UnidentifiedImageError:
            pass
    return Image.open(io.BytesIO(data))


def _fast_jpeg(data: bytes, resolution: int) -> np.ndarray | None:
    """libjpeg-turbo's DCT-scaled decode (simplejpeg) for plain YCbCr/gray JPEGs: 2.6x PIL's draft
    decode here. None for anything else (other colour spaces, damage, too small), which then takes
    the PIL path and its reasons."""
    try:
        h, w, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        if w * h > MAX_PIXELS:
            return None  # the PIL path names it
        box = crop_box((w, h))
        side = min(box[2] - box[0], box[3] - box[1])
        if colorspace not in ("YCbCr", "Gray") or side < resolution:
            return None
        scale = min(8, side // resolution)
        arr = simplejpeg.decode_jpeg(data, colorspace="RGB", min_width=-(-w // scale), min_height=-(-h // scale))
    except ValueError:
        return None
    f = w / arr.shape[1]
    left, top, s = round(box[0] / f), round(box[1] / f), max(resolution, int(side / f))
    crop = arr[top : top + s, left : left + s]
    img = Image.fromarray(np.ascontiguousarray(crop)).resize((resolution, resolution), Image.Resampling.LANCZOS)
    return np.asarray(img, dtype=np.uint8)


def process_image(data: bytes, resolution: int, jpeg_hint: bool = False) -> np.ndarray:
    """Decode, crop and resize one image to (R, R, 3) uint8; raise ValueError with a reason."""
    if data[:2] == b"\xff\xd8":
        fast = _fast_jpeg(data, resolution)
        if fast is not None:
            return fast
    try:
        img = _open(data, jpeg_hint)
        if img.size[0] * img.size[1] > MAX_PIXELS:  # known from the header, before any decoding
            raise ValueError(f"too large: {img.size[0]}x{img.size[1]} is over {MAX_PIXELS // 10**6} Mpx "
                             "(a decompression bomb?)")
        box = crop_box(img.size)
        side = min(box[2] - box[0], box[3] - box[1])
        if side < resolution:
            raise ValueError(
                f"too small: {img.size[0]}x{img.size[1]} crops to {side}px < {resolution}px"
            )
        if img.format == "JPEG" and img.mode in ("RGB", "L", "CMYK", "YCbCr"):
            # decode at 1/2, 1/4 or 1/8 scale while the crop stays at least `resolution` wide
            full = img.size
            scale = side // resolution
            img.draft(img.mode, (full[0] // scale, full[1] // scale))
            if img.size != full:
                f = full[0] / img.size[0]
                left, top, s = round(box[0] / f), round(box[1] / f), max(resolution, int(side / f))
                box = (left, top, min(left + s, img.size[0]), min(top + s, img.size[1]))
        img.load()
    except ValueError:
        raise
    except UnidentifiedImageError:
        raise ValueError("not an image") from None
    except Image.DecompressionBombError as exc:  # PIL refuses to even open it
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        raise ValueError(f"too large: {pixels.group(1) if pixels else 'more than 179M'} pixels is over "
                         f"{MAX_PIXELS // 10**6} Mpx (a decompression bomb?)") from None
    except (OSError, SyntaxError) as exc:
        raise ValueError(f"corrupt or truncated ({exc})") from None
    img = _to_rgb(img)
    img = img.crop(box).resize((resolution, resolution), Image.Resampling.LANCZOS)
    return np.asarray(img, dtype=np.uint8)


def made_by_facegan(folder: Path) -> str | None:
    """What facegan wrote `folder` as, when it did, and why its pictures are not faces ("a facegan
    run (config.json, ...): its pictures are sample grids and plots, not faces"), else None: a
    folder of faces for all we know (`folders.kind_of`)."""
    found = folders.kind_of(open_store(folder))
    return f"{found.what}: {found.why}" if found else None


def _list_source(source: Path) -> tuple[list[str], list[dict]]:
    """(files to read, sorted; skipped records for what cannot be read at all). Hidden files and
    macOS metadata are left out silently."""
    skipped: list[dict] = []
    if source.suffix.lower() == ".zip" and source.is_file():
        try:
            with zipfile.ZipFile(source) as zf:
                names = [n for n in zf.namelist() if not n.endswith("/")]
        except (zipfile.BadZipFile, OSError) as exc:
            raise DatasetError(f"{source}: not a readable zip archive ({exc})") from None
        unsafe = {n for n in names if n.startswith("/") or ".." in n.split("/")}
        skipped += [{"file": n, "reason": "unsafe path in the archive"} for n in sorted(unsafe)]
        seen: set[str] = set()
        twice = {n for n in names if n in seen or seen.add(n)}  # which of two same-named entries is meant?
        skipped += [{"file": n, "reason": "duplicate entry name in the archive (each one skipped)"}
                    for n in sorted(twice)]
        names = sorted({n for n in names if n not in unsafe | twice})
    elif source.is_dir():
        if not os.access(source, os.R_OK | os.X_OK):
            raise DatasetError(f"{source}: cannot read this folder (permission denied)")
        made = made_by_facegan(source)
        if made:  # a slip of the path: its pictures would be taken for faces
            raise DatasetError(f"{source}: {made}; give img_align_celeba/, its .zip, or a folder of faces")
        names = []

        def unreadable(exc: OSError) -> None:
            where = Path(exc.filename).relative_to(source).as_posix() if exc.filename else "?"
            skipped.append({"file": where + "/", "reason": f"unreadable folder ({exc.strerror})"})

        for folder, subfolders, files in os.walk(source, onerror=unreadable):
            names += [(Path(folder) / f).relative_to(source).as_posix() for f in files]
            for sub in sorted(subfolders):  # a run, dataset, ... of facegan's inside: listed as skipped, not read
                try:
                    made = not sub.startswith(".") and sub != "__MACOSX" and made_by_facegan(Path(folder) / sub)
                except StorageError:  # a folder that cannot be looked into: the walk lists it as unreadable
                    made = None
                if made:
                    subfolders.remove(sub)
                    skipped.append({"file": (Path(folder) / sub).relative_to(source).as_posix() + "/", "reason": made})
    else:
        raise DatasetError(f"{source}: no such folder or .zip file")
    hidden = lambda n: any(part.startswith(".") or part == "__MACOSX" for part in n.split("/"))  # noqa: E731
    return sorted(n for n in names if not hidden(n)), skipped


def _process_chunk(args: tuple[str, list[str], int, str, str]) -> tuple[dict | None, list[dict], list[str]]:
    """Worker: process a chunk of files into one shard and write it; returns (shard record or
    None when no file was usable, skipped records, the files kept in shard order). The main
    process only collects records."""
    source, names, resolution, out_uri, shard_name = args
    path = Path(source)
    archive = zipfile.ZipFile(path) if path.suffix.lower() == ".zip" and path.is_file() else None
    images, skipped, kept = [], [], []
    try:
        for name in names:
            suffix = os.path.splitext(name)[1].lower()
            if suffix not in IMAGE_SUFFIXES:
                skipped.append({"file": name, "reason": "not an image (file suffix)"})
                continue
            try:
                data = _read_entry(archive, source, name)
                images.append(process_image(data, resolution, suffix in (".jpg", ".jpeg")))
                kept.append(name)
            except ValueError as exc:
                skipped.append({"file": name, "reason": str(exc)})
            except (OSError, zipfile.BadZipFile, zlib.error, EOFError) as exc:
                skipped.append({"file": name, "reason": f"unreadable ({type(exc).__name__}: {exc})"})
            except (RuntimeError, NotImplementedError) as exc:  # zipfile: encrypted, unknown compression
                reason = "encrypted" if "encrypted" in str(exc) else f"unreadable ({exc})"
                skipped.append({"file": name, "reason": reason})
    finally:
        if archive:
            archive.close()
    record = write_shard(open_store(out_uri), shard_name, np.stack(images)) if images else None
    return record, skipped, kept


def _read_entry(archive: zipfile.ZipFile | None, source: str, name: str) -> bytes:
    """The bytes of one input file: only a regular file (a FIFO, a device or a link to one is
    refused without blocking) of at most MAX_FILE_BYTES; ValueError says why not."""
    if archive:
        size = archive.getinfo(name).file_size
        if size > MAX_FILE_BYTES:
            raise ValueError(f"too large: {size} bytes unpacked, over {MAX_FILE_BYTES >> 20} MiB")
        return archive.read(name)
    fd = os.open(os.path.join(source, name), os.O_RDONLY | os.O_NONBLOCK)  # a FIFO would block open()
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file (a FIFO, device or socket)")
        if info.st_size > MAX_FILE_BYTES:
            raise ValueError(f"too large: {info.st_size} bytes, over {MAX_FILE_BYTES >> 20} MiB")
        return f.read(MAX_FILE_BYTES + 1)


def _die_with_parent(parent: int) -> None:
    """A worker's initializer: the kernel kills this process when the process that started it dies
    (Linux PR_SET_PDEATHSIG), so a `kill -9` of prepare (pid `parent`) leaves no worker running."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: workers end when their job queue closes
        return
    try:
        os.kill(parent, 0)
    except ProcessLookupError:  # prepare died before the request took effect
        os._exit(1)
    except PermissionError:
        pass


def write_shard(store: Store, name: str, images: np.ndarray) -> dict:
    """Write one uint8 (N, R, R, 3) shard atomically; returns its manifest record."""
    data = _npy_bytes(np.ascontiguousarray(images))
    store.put_bytes(name, data)
    return {"name": name, "count": int(len(images)), "sha256": hashlib.sha256(data).hexdigest()}


def shard_size_for(count: int) -> int:
    """Images per shard: about 16 shards for small inputs (parallel work), at most SHARD_SIZE.
    Depends on the file count only, so the dataset does not depend on the worker count."""
    return max(64, min(SHARD_SIZE, -(-count // 16)))


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def write_manifest(store: Store, resolution: int, shards: list[dict], **fields) -> dict:
    """Write `manifest.json` for shards already written (so, last: a dataset without it is
    incomplete); `fields` adds source, skipped, etc. Returns the manifest."""
    manifest = {"format": FORMAT, "version": VERSION, "resolution": resolution,
                "count": sum(s["count"] for s in shards), "shards": shards, "skipped": [], **fields}
    manifest["id"] = manifest_id(manifest)
    store.put_json(MANIFEST, manifest)
    return manifest


def read_attribute_table(uri: str) -> attrs.AttributeTable:
    """Read and parse an attribute table from a path or store URI; errors name the URI."""
    parent, key = split_uri(uri)
    try:
        text = parent.get_bytes(key).decode("utf-8", errors="replace")
    except StorageError as exc:
        raise DatasetError(f"attribute table: {exc}") from None
    return attrs.parse(text, uri)


def write_attributes(store: Store, build: str, table: attrs.AttributeTable, files: list[str], uri: str) -> dict:
    """Write the labels of `files` (in the dataset's row order) as one bool (N, K) .npy for
    build `build`; returns the manifest's "attributes" record (naming the table's `uri`)."""
    name = f"{ATTRIBUTES_NAME}-{build}.npy"
    data = _npy_bytes(np.stack([table.rows[os.path.basename(f)] for f in files]).astype(bool))
    store.put_bytes(name, data)
    record = {"names": list(table.names), "file": name, "sha256": hashlib.sha256(data).hexdigest(), "table": uri}
    if table.partial:
        record["table_rows"] = {"held": len(table.rows), "declared": table.declared}
    return record


def describe(manifest: dict) -> str:
    """A (valid) manifest's dataset in a few words: "16 images at 64px, 40 attributes per image"."""
    return (f"{manifest['count']} images at {manifest['resolution']}px"
            + (f", {len(manifest['attributes']['names'])} attributes per image" if "attributes" in manifest else ""))


def unused_rows(manifest: dict) -> str:
    """"N row(s) of the attribute table have no image in the source (first, ...)" for a manifest
    whose labels' record counts such rows; "" when it counts none."""
    unused = (manifest.get("attributes") or {}).get("rows_without_image")
    if not unused:
        return ""
    return (f"{unused['count']} row(s) of the attribute table have no image in the source "
            f"({unused['first'][0]}{', ...' if unused['count'] > 1 else ''})")


@dataclass(frozen=True)
class PrepareResult:
    """What `prepare` wrote: the manifest and where, and the manifest of the dataset it replaced
    there (None when the folder held none)."""

    uri: str
    manifest: dict
    replaced: dict | None = None

    @property
    def summary(self) -> str:
        m = self.manifest
        line = f"prepared {describe(m)} into {len(m['shards'])} shard(s) at {self.uri}; skipped {len(m['skipped'])}"
        if rows := unused_rows(m):  # not files skipped: the table's rows for images that are not in the source
            line += f"; {rows}"
        if self.replaced is None:
            return line
        if self.replaced.get("id") == m["id"]:
            return f"{line}; it replaced an identical build there"
        return f"{line}; it replaced the dataset there ({describe(self.replaced)})"


def _earlier(store: Store) -> dict | None:
    """The manifest of the dataset in `store` that a build replaces; None when there is none (or
    it is unreadable: nothing a reader could have used)."""
    try:
        return read_manifest(store) if store.exists(MANIFEST) else None
    except (DatasetError, StorageError):
        return None


def _dataset_named(key: str) -> bool:
    """Whether `key` is a name a dataset folder holds (what a stopped `prepare` may have left)."""
    return key in (MANIFEST, LEASE_KEY) or bool(SHARD_NAME.fullmatch(key)) or key.startswith(f"{ATTRIBUTES_NAME}-")


def _check_out(store: Store, out_uri: str) -> None:
    """Refuse an output folder that is neither empty, an earlier dataset (it has a manifest) nor
    what a stopped `prepare` left: a run, an export or a folder of photos is not written into."""
    keys = store.list()
    foreign = [key for key in keys if key and not _dataset_named(key) and not desktop_file(key)]
    if foreign and MANIFEST not in keys:
        raise DatasetError(foreign_files(out_uri, foreign, "a dataset does not have", MANIFEST,
                                         "not a dataset; prepare into an empty folder"))


def prepare(
    source: str | Path,
    out_uri: str,
    resolution: int = 64,
    workers: int | None = None,
    shard_size: int | None = None,
    limit: int | None = None,
    log=print,
    source_label: str | None = None,
    attributes: str | None = None,
) -> PrepareResult:
    """Build a dataset at `out_uri` from a folder or .zip of face images.

    `workers` defaults to the number of cores; `limit` keeps only the first N files (sorted).
    Bad files are skipped and listed in the manifest; an input with no usable image is an error.
    `attributes`: URI (path or s3://) of a CelebA `list_attr_celeba.txt`; its labels are stored
    with the images in row order (see facegan.data). Images without a row are skipped; rows
    without an image are counted in the labels' record (`rows_without_image`: the count and the
    first ROWS_NAMED names), not listed one by one.
    """
    from facegan.config import RESOLUTIONS

    if resolution not in RESOLUTIONS:
        raise DatasetError(f"resolution={resolution} is not supported; choose one of {RESOLUTIONS}")
    for name, value in (("limit", limit), ("workers", workers), ("shard_size", shard_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise DatasetError(f"{name}={value!r} must be a positive integer")
    if not str(source).strip():
        raise DatasetError("source is empty; give the img_align_celeba/ folder, its .zip, or a folder of faces")
    source = Path(source).expanduser()
    if not is_remote(out_uri) and canonical(out_uri) == str(source.resolve()):
        raise DatasetError(f"{out_uri}: the output is the source folder; prepare into another folder")
    table = read_attribute_table(attributes) if attributes else None  # a bad table fails before any work
    if table is not None and table.partial:
        log(f"prepare: {attributes} is a partial table: {len(table.rows)} of the {table.declared} rows its line 1 "
            "names; images without a row are skipped and listed")
    names, unlisted = _list_source(source)
    if limit is not None:
        names = names[:limit]
    if table is not None:  # an image the table does not label cannot be in a labelled dataset
        has_row = lambda n: (os.path.basename(n) in table.rows  # noqa: E731
                             or os.path.splitext(n)[1].lower() not in IMAGE_SUFFIXES)
        unlisted += [{"file": n, "reason": f"no row in the attribute table {attributes}"}
                     for n in names if not has_row(n)]
        names = [n for n in names if has_row(n)]
    if table is not None and names == [] and unlisted and all("no row in the attribute table" in u["reason"]
                                                             for u in unlisted):
        rows = sorted(table.rows)
        raise DatasetError(f"{source}: none of its {len(unlisted)} images has a row in the attribute table "
                           f"{attributes} (its rows name {rows[0] if rows else 'no file'} .. "
                           f"{rows[-1] if rows else ''}; the images {unlisted[0]['file']} .. {unlisted[-1]['file']})")
    if not names:
        if not unlisted:
            raise DatasetError(f"{source}: empty input, no files found")
        first = unlisted[0]
        raise DatasetError(f"{source}: no file to prepare: all {len(unlisted)} were skipped (the first, "
                           f"{first['file']}: {first['reason']})")
    store = open_store(out_uri)
    _check_out(store, out_uri)
    with Lease(store, what="dataset", doing="prepared", instead="prepare into another folder") as lease:
        build = uuid.uuid4().hex[:8]  # this build's shard names: the current dataset's stay untouched
        earlier = _earlier(store)
        workers = workers or os.cpu_count() or 1
        per_shard = shard_size or shard_size_for(len(names))
        jobs = [(str(source), names[i : i + per_shard], resolution, store.root,
                 f"shard-{build}-{i // per_shard:05d}.npy") for i in range(0, len(names), per_shard)]
        shards: list[dict] = []
        skipped: list[dict] = list(unlisted)
        kept: list[str] = []  # the dataset's files in row order
        started = time.perf_counter()

        # each job decodes its files and writes its own shard; map() keeps the records in order
        # no more workers than jobs; each dies with this process (a kill -9 here leaves none behind)
        pool = (ProcessPoolExecutor(min(workers, len(jobs)), initializer=_die_with_parent, initargs=(os.getpid(),))
                if workers > 1 and len(jobs) > 1 else None)
        try:
            results = pool.map(_process_chunk, jobs) if pool else map(_process_chunk, jobs)
            for done, (record, skips, files) in enumerate(results, 1):
                skipped += skips
                kept += files
                if record:
                    shards.append(record)
                if done % 10 == 0 or done == len(jobs):
                    seen = sum(s["count"] for s in shards) + len(skipped) - len(unlisted)  # of `names`
                    rate = seen / max(time.perf_counter() - started, 1e-9)
                    log(f"prepare: {seen}/{len(names)} files, {rate:.0f} img/s")
            if not shards:
                reasons = sorted({s["reason"].split(" (")[0] for s in skipped})
                raise DatasetError(f"{source}: no usable image among {len(names)} files ({'; '.join(reasons)})")
            labels = {}
            if table is not None:
                labels = {"attributes": write_attributes(store, build, table, kept, attributes)}
                if limit is None:  # with a limit, rows past it are expected to have no image
                    present = {os.path.basename(n) for n in names}
                    missing = [f for f in table.rows if f not in present]
                    if missing:  # counted, not listed: the whole table beside a few images is 200k rows
                        labels["attributes"]["rows_without_image"] = {"count": len(missing),
                                                                      "first": missing[:ROWS_NAMED]}
            if lease.lost:  # another prepare took the folder over: it owns the manifest now
                raise LeaseError(lease.lost)
            manifest = write_manifest(  # the switch: from here on readers see this build
                store, resolution, shards, source=source_label or str(source), limit=limit, skipped=skipped, **labels,
                crop={"celeba_face_box": list(CELEBA_FACE_BOX), "other": "centre square"},
                resize="PIL Lanczos (antialiased)",
            )
        except BaseException:  # this build failed: drop what it wrote; the dataset there stays as it was
            for key in store.list():
                if key.startswith((f"shard-{build}-", f"{ATTRIBUTES_NAME}-{build}")):
                    store.delete(key)
            raise
        finally:
            if pool:
                pool.shutdown()
        current = {s["name"] for s in shards} | ({labels["attributes"]["file"]} if labels else set())
        for key in store.list():  # the manifest now names this build: earlier builds' shards and labels go
            if (SHARD_NAME.fullmatch(key) or key.startswith(f"{ATTRIBUTES_NAME}-")) and key not in current:
                store.delete(key)
        result = PrepareResult(store.root, manifest, earlier)
        log(result.summary)
        return result


