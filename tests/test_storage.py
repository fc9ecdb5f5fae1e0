import os

import pytest

from facegan.storage import MULTIPART_THRESHOLD, LocalStore, S3Store, StorageError, open_store, split_uri


def test_put_get_list_exists_delete(store_uri, tmp_path):
    s = open_store(store_uri)
    assert s.list() == []
    assert not s.exists("a/b.bin")
    s.put_bytes("a/b.bin", b"hello")
    s.put_bytes("a/c.bin", b"world")
    s.put_bytes("ab/d.bin", b"!")
    s.put_json("meta.json", {"x": 1})
    assert s.get_bytes("a/b.bin") == b"hello"
    assert s.get_json("meta.json") == {"x": 1}
    assert s.exists("a/b.bin")
    assert s.list() == ["a/b.bin", "a/c.bin", "ab/d.bin", "meta.json"]
    assert s.list("a") == ["a/b.bin", "a/c.bin"]  # "a" does not match "ab/"
    s.put_bytes("a/b.bin", b"replaced")
    assert s.get_bytes("a/b.bin") == b"replaced"
    s.delete("a/b.bin")
    s.delete("a/b.bin")  # deleting a missing key is fine
    assert not s.exists("a/b.bin")
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(1000))
    s.put_file("files/x.bin", src)
    s.get_file("files/x.bin", tmp_path / "out" / "x.bin")
    assert (tmp_path / "out" / "x.bin").read_bytes() == src.read_bytes()
    assert s.uri("files/x.bin").endswith("/files/x.bin")
    child = s.child("files")
    assert child.list() == ["x.bin"]


def test_large_object_roundtrip(store_uri, tmp_path):
    """Above the multipart threshold S3 uses TransferManager's multipart upload."""
    s = open_store(store_uri)
    blob = os.urandom(MULTIPART_THRESHOLD + 1234)
    s.put_bytes("big.bin", blob)
    assert s.get_bytes("big.bin") == blob
    path = tmp_path / "big.bin"
    path.write_bytes(blob)
    s.put_file("big2.bin", path)
    s.get_file("big2.bin", tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == blob


def test_missing_key_names_uri(store_uri, tmp_path):
    s = open_store(store_uri)
    with pytest.raises(StorageError, match=r"/nope\.bin: no such object") as err:
        s.get_bytes("nope.bin")
    assert not err.value.transient  # a retry cannot fix it
    with pytest.raises(StorageError, match=r"/nope\.bin: no such object"):
        s.get_file("nope.bin", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_a_download_to_a_place_that_cannot_hold_it_names_both(store_uri, tmp_path):
    """The local side of get_file fails as a StorageError too (both stores), not an OSError; a file
    in the way of the download itself is replaced, as any download replaces its target."""
    s = open_store(store_uri)
    s.put_bytes("a.bin", b"a")
    (tmp_path / "notes.txt").write_bytes(b"x")
    where = tmp_path / "notes.txt" / "a.bin"
    with pytest.raises(StorageError, match=rf"^{tmp_path / 'notes.txt'}: is a file, not a folder \(.*/a\.bin: cannot "
                                           rf"download to {where}\)$"):
        s.get_file("a.bin", where)
    s.get_file("a.bin", tmp_path / "notes.txt")
    assert (tmp_path / "notes.txt").read_bytes() == b"a"


def test_invalid_json_names_uri(store_uri):
    s = open_store(store_uri)
    s.put_bytes("bad.json", b"{not json")
    with pytest.raises(StorageError, match=r"bad\.json: not valid JSON"):
        s.get_json("bad.json")


def test_open_store_kinds(tmp_path):
    assert isinstance(open_store(str(tmp_path)), LocalStore)
    assert isinstance(open_store(f"file://{tmp_path}"), LocalStore)
    with pytest.raises(StorageError, match="unsupported URI scheme"):
        open_store("gs://bucket/x")
    with pytest.raises(StorageError, match="'..' is not allowed"):
        open_store(str(tmp_path)).get_bytes("../etc/passwd")
    store, key = split_uri(f"{tmp_path}/a/b.pt")
    assert key == "b.pt" and store.root.endswith("/a")


def test_an_s3_uri_is_read_as_the_aws_cli_reads_it(bucket):
    """'#', '?' and '%' in an s3:// URI are part of the key prefix, as the AWS CLI has them (urlparse
    read "runs/exp#2" as "runs/exp" with a fragment: a second run written into the first's folder)."""
    names = ("exp#2", "exp?v=2", "exp%202 b")
    for name in names:
        store = open_store(f"{bucket}/runs/{name}")
        assert store.uri("k") == f"{bucket}/runs/{name}/k"
        store.put_bytes("k", name.encode())
    assert open_store(f"{bucket}/runs").list() == sorted(f"{name}/k" for name in names)
    assert [open_store(f"{bucket}/runs/{name}").get_bytes("k") for name in names] == [n.encode() for n in names]


def test_a_file_uri_is_read_as_rfc_8089_has_it(tmp_path):
    """A file:// URI's percent escapes are decoded (Path.as_uri() writes a space as %20); a '?' or
    '#' in one would end its path (another folder than the one written), so it is refused."""
    folder = tmp_path / "a b%"
    assert open_store(folder.as_uri()).path == folder
    for uri in (f"file://{tmp_path}/exp#2", f"file://{tmp_path}/exp?v=2"):
        with pytest.raises(StorageError, match=r"path ends at '\?' or '#'; write them as %3F and %23"):
            open_store(uri)
    assert not any(tmp_path.iterdir())


def test_local_write_leaves_no_temp_files(tmp_path):
    s = open_store(str(tmp_path))
    for i in range(5):
        s.put_bytes("k", str(i).encode())
    assert [p.name for p in tmp_path.iterdir()] == ["k"]


def test_missing_bucket_is_named(moto_endpoint):
    s = open_store("s3://no-such-bucket-facegan/x")
    with pytest.raises(StorageError, match="bucket 'no-such-bucket-facegan' does not exist"):
        s.put_bytes("a", b"1")
    with pytest.raises(StorageError, match="does not exist"):
        s.exists("a")


def test_unreachable_endpoint_is_named(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")  # one retry, not the default's five with backoff
    s = S3Store("s3://bucket/prefix")
    with pytest.raises(StorageError, match=r"s3://bucket/prefix/k: S3 endpoint unreachable") as err:
        s.get_bytes("k")
    assert err.value.transient  # worth a retry


def test_retries_are_standard_unless_aws_settings_say_otherwise(monkeypatch):
    for var in ("AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    assert S3Store("s3://bucket/p").client.meta.config.retries == {"mode": "standard", "total_max_attempts": 6}
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("AWS_RETRY_MODE", "adaptive")
    assert S3Store("s3://bucket/p").client.meta.config.retries == {"mode": "adaptive", "total_max_attempts": 2}


def test_no_credentials_is_named(monkeypatch, tmp_path, moto_endpoint):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    s = S3Store("s3://bucket/p")
    with pytest.raises(StorageError, match="s3://bucket/p/k: no AWS credentials"):
        s.put_bytes("k", b"1")


def test_s3_objects_get_browser_content_types(bucket):
    import boto3

    s = open_store(bucket + "/g")
    s.put_bytes("index.html", b"<p>hi</p>")
    s.put_bytes("grid.png", b"\x89PNG")
    s3 = boto3.client("s3")
    name = bucket.removeprefix("s3://")
    assert s3.head_object(Bucket=name, Key="g/index.html")["ContentType"] == "text/html"
    assert s3.head_object(Bucket=name, Key="g/grid.png")["ContentType"] == "image/png"


def test_bad_bucket_name_is_not_transient(moto_endpoint):
    with pytest.raises(StorageError, match=r"s3://Bad_Bucket_Name/x: 'Bad_Bucket_Name' is not a valid") as err:
        open_store("s3://Bad_Bucket_Name/x")  # refused before any request, so flows do not retry it
    assert not err.value.transient and "\n" not in str(err.value)


def test_a_connection_lost_while_telling_missing_key_from_missing_bucket_is_a_storage_error(bucket, monkeypatch):
    """A 404 makes the store ask whether the bucket exists; when that second request fails on the
    network, the caller still gets a StorageError naming the URI (not a raw botocore error)."""
    from botocore.exceptions import ConnectionClosedError

    store = open_store(f"{bucket}/p")

    def lost(**_):
        raise ConnectionClosedError(endpoint_url="http://127.0.0.1:1")

    monkeypatch.setattr(store.client, "head_bucket", lost)  # the network drops right between the two requests
    assert store.exists("missing") is False
    with pytest.raises(StorageError, match=rf"{bucket}/p/missing: no such object"):
        store.get_bytes("missing")


def test_local_files_get_the_umask_mode(tmp_path):
    old = os.umask(0o027)
    try:
        store = open_store(str(tmp_path / "s"))
        store.put_bytes("a/b.json", b"{}")
        assert (tmp_path / "s" / "a" / "b.json").stat().st_mode & 0o777 == 0o640  # not mkstemp's 0600
        os.umask(0o022)
        store.put_bytes("a/c.json", b"{}")
        assert (tmp_path / "s" / "a" / "c.json").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)


def test_a_store_says_whether_it_is_remote(tmp_path):
    """Whether to cache what is read (dataset shards) is the store's fact, not a URI prefix test
    elsewhere: s3:// is remote, a folder or file:// is not; an unknown scheme is an error."""
    from facegan.storage import is_remote, store_class

    assert is_remote("s3://bucket/datasets/x") and store_class("s3://b") is S3Store and S3Store.remote
    assert not is_remote(tmp_path) and not is_remote(f"file://{tmp_path}") and not open_store(tmp_path).remote
    assert store_class("relative/folder") is LocalStore
    with pytest.raises(StorageError, match="unsupported URI scheme"):
        is_remote("gs://bucket/x")
