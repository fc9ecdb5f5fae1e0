import io
import os
import random

import numpy as np
import pytest
import torch

from facegan import checkpoint as ckpt
from facegan.storage import open_store


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/facegan-pwned",))


OTHER_PARTS = {"D": {}, "G_ema": {}, "opt_g": {}, "opt_d": {}}  # a complete checkpoint has every part


def _state(step: int) -> dict:
    return ckpt.make_state(step, {"model": {"resolution": 32}}, "abc", "dcgan", G={"w": torch.ones(2) * step},
                           **OTHER_PARTS)


def test_roundtrip_and_rng_restore(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    state = ckpt.to_host(_state(5))[0]
    expected = (torch.rand(3), np.random.rand(3), random.random())
    loaded = ckpt.from_bytes(ckpt.to_bytes(state), "mem")
    assert loaded["step"] == 5 and torch.equal(loaded["G"]["w"], torch.full((2,), 5.0))
    ckpt.set_rng_state(loaded["rng"])
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]


def test_pickle_payload_is_refused(tmp_path):
    buf = io.BytesIO()
    torch.save({"format": ckpt.FORMAT, "version": 1, "evil": Payload()}, buf)
    if os.path.exists("/tmp/facegan-pwned"):
        os.remove("/tmp/facegan-pwned")
    with pytest.raises(ckpt.CheckpointError) as refused:
        ckpt.from_bytes(buf.getvalue(), "s3://b/evil.pt")
    assert not os.path.exists("/tmp/facegan-pwned")
    message = str(refused.value)
    assert message.startswith("s3://b/evil.pt: refused: the file holds code, not only tensors (it imports ")
    assert "system" in message and "weights_only=False" not in message and "\n" not in message


def test_foreign_and_newer_files_are_refused():
    buf = io.BytesIO()
    torch.save({"weights": torch.zeros(1)}, buf)
    with pytest.raises(ckpt.CheckpointError, match="x.pt: not a facegan checkpoint"):
        ckpt.from_bytes(buf.getvalue(), "x.pt")
    state = ckpt.to_host(_state(1))[0]
    state["version"] = ckpt.VERSION + 1
    with pytest.raises(ckpt.CheckpointError, match="newer than this facegan"):
        ckpt.from_bytes(ckpt.to_bytes(state), "y.pt")
    with pytest.raises(ckpt.CheckpointError, match="z.pt: not a loadable"):
        ckpt.from_bytes(b"garbage", "z.pt")


def test_missing_checkpoint_errors(store_uri):
    with pytest.raises(ckpt.CheckpointError, match="latest.json missing"):
        ckpt.load(store_uri)
    with pytest.raises(ckpt.CheckpointError, match=r"step-0000001\.pt: no such object"):
        ckpt.load(store_uri + "/checkpoints/step-0000001.pt")
    run = open_store(store_uri)
    run.put_json("latest.json", {"step": 3, "key": "checkpoints/step-0000003.pt"})
    with pytest.raises(ckpt.CheckpointError, match="points at a missing checkpoint"):
        ckpt.load(store_uri)


def test_keep_newest_k_plus_best(store_uri):
    run = open_store(store_uri)
    metrics = {1: 50.0, 2: 30.0, 3: 40.0, 4: 45.0, 5: 41.0, 6: 39.0}
    for step, value in metrics.items():
        ckpt.write_checkpoint(run, ckpt.to_host(_state(step))[0], keep_last=2, metric=("fid", value))
    assert [s for s, _ in ckpt.list_checkpoints(run)] == [2, 5, 6]  # newest two + best (step 2)
    assert ckpt.read_pointer(run)["step"] == 6
    assert ckpt.read_pointer(run, ckpt.BEST)["step"] == 2
    assert ckpt.load_run(run, ckpt.BEST)["step"] == 2


def test_a_damaged_best_json_prunes_nothing_until_a_score_replaces_it(tmp_path):
    """best.json unreadable within a session: which checkpoint it named is unknown, so the
    checkpoints without a score that follow prune none (the best one was deleted before); the next
    scored one becomes best.json and pruning resumes. (A resumed run first rebuilds best.json from
    its metric rows: test_metrics.)"""
    run = open_store(str(tmp_path / "run"))
    ckpt.write_checkpoint(run, ckpt.to_host(_state(1))[0], keep_last=1, metric=("fid", 20.0))
    ckpt.write_checkpoint(run, ckpt.to_host(_state(2))[0], keep_last=1, metric=("fid", 30.0))
    run.put_bytes(ckpt.BEST, b"{damaged")
    for step in (3, 4):
        ckpt.write_checkpoint(run, ckpt.to_host(_state(step))[0], keep_last=1)
    assert [s for s, _ in ckpt.list_checkpoints(run)] == [1, 2, 3, 4]
    assert [e["step"] for e in ckpt.read_index(run)] == [1, 2, 3, 4]
    assert ckpt.load_run(run)["step"] == 4 and ckpt.load(str(tmp_path / "run" / "checkpoints" / "step-0000001.pt"))
    ckpt.write_checkpoint(run, ckpt.to_host(_state(5))[0], keep_last=1, metric=("fid", 25.0))
    assert ckpt.read_pointer(run, ckpt.BEST)["step"] == 5 and [s for s, _ in ckpt.list_checkpoints(run)] == [5]


def test_a_score_that_is_not_a_number_is_never_the_best(tmp_path):
    """A NaN or infinite score (a metric that failed on degenerate images) is recorded but never
    becomes best.json, and a best.json holding one gives way to the next real score: it would
    otherwise win no comparison and keep its checkpoint forever."""
    run = open_store(str(tmp_path / "run"))
    for step, value in {1: float("nan"), 2: 40.0, 3: float("inf"), 4: float("nan"), 5: 41.0, 6: 39.0}.items():
        ckpt.write_checkpoint(run, ckpt.to_host(_state(step))[0], keep_last=1, metric=("fid", value))
        best = ckpt.read_pointer(run, ckpt.BEST)
        assert (best or {}).get("step") == (None if step == 1 else 6 if step == 6 else 2), (step, best)
    assert [s for s, _ in ckpt.list_checkpoints(run)] == [6]
    run.put_json(ckpt.BEST, {**ckpt.read_pointer(run, ckpt.BEST), "metric": {"name": "fid", "value": float("nan")}})
    ckpt.write_checkpoint(run, ckpt.to_host(_state(7))[0], keep_last=1, metric=("fid", 45.0))
    assert ckpt.read_pointer(run, ckpt.BEST)["step"] == 7


def test_a_render_met_twice_in_one_save_is_copied_and_rendered_once(tmp_path):
    """The sample grid is a file of its own and the picture inside the TensorBoard events: one copy
    off the device, one PNG encoding."""
    calls = []

    def encode(t: torch.Tensor) -> bytes:
        calls.append(1)
        return bytes(t.to(torch.uint8).tolist())

    grid = ckpt.Render(encode, torch.arange(4.0))
    events = ckpt.Render(lambda picture: b"events:" + picture(), grid)
    (files, _), ready = ckpt.to_host(({"samples.png": grid, "events": events}, None))
    ready()
    assert files["events"].args[0] is files["samples.png"]
    assert files["events"]() == b"events:\x00\x01\x02\x03" and files["samples.png"]() == b"\x00\x01\x02\x03"
    assert len(calls) == 1


def test_host_data_is_handed_over_unwalked():
    """Rows already on the host are not copied item by item on the training thread (`Host`)."""
    rows = [{"step": i, "loss": torch.tensor(1.0)} for i in range(3)]
    (host, walked), ready = ckpt.to_host((ckpt.Host(rows), rows))
    ready()
    assert host is rows and walked is not rows and walked[0]["loss"] is not rows[0]["loss"]


def test_background_writer_writes_in_order_and_surfaces_errors(tmp_path):
    run = open_store(str(tmp_path / "run"))
    written = []
    writer = ckpt.CheckpointWriter(run, keep_last=3, on_written=lambda s, u: written.append(s))
    live = {"w": torch.zeros(2)}
    show = ckpt.Render(lambda t, sep: sep.join(str(v) for v in t.tolist()).encode(), live["w"], sep=",")
    for step in (1, 2, 3):
        live["w"] += 1
        writer.save(ckpt.make_state(step, {}, "d", "dcgan", G=live, **OTHER_PARTS),
                    {f"extra-{step}.txt": b"x", f"render-{step}.txt": show})
        live["w"] += 100  # mutating after save() must not change what was saved, nor what is rendered
    writer.close()
    assert written == [1, 2, 3]
    assert ckpt.load_run(run)["G"]["w"].tolist() == [203.0, 203.0]
    assert run.exists("extra-3.txt")
    assert [run.get_bytes(f"render-{step}.txt") for step in (1, 2, 3)] == [b"1.0,1.0", b"102.0,102.0", b"203.0,203.0"]
    logs = []
    drawer = ckpt.CheckpointWriter(open_store(str(tmp_path / "drawn")), keep_last=1, log=logs.append)
    drawer.save(ckpt.make_state(1, {}, "d", "dcgan", G=live, **OTHER_PARTS),
                {"loss.png": ckpt.Render(lambda: 1 / 0), "samples.png": b"ok"})
    drawer.close()  # a picture that fails to render is left out; the checkpoint is still written
    assert ckpt.load_run(open_store(str(tmp_path / "drawn")))["step"] == 1
    assert logs == ["checkpoint step 1: could not render loss.png, left out (ZeroDivisionError: division by zero)"]
    assert not (tmp_path / "drawn" / "loss.png").exists() and (tmp_path / "drawn" / "samples.png").exists()
    bad = ckpt.CheckpointWriter(open_store(str(tmp_path / "run")), keep_last=1)
    bad.save(ckpt.make_state(4, {}, "d", "dcgan", G=live, **OTHER_PARTS), {"../escape": b"x"})
    with pytest.raises(Exception, match="not allowed"):
        bad.close()


def test_a_checkpoint_replaced_in_an_outage_keeps_its_written_out_files(tmp_path):
    """While the store is down a newer checkpoint replaces the waiting one: the replaced one's state
    and Renders (its picture) are dropped, its files given as bytes (the watchdog's verdict) are
    written with the newer one unless it writes the same key."""
    import threading

    from facegan.storage import LocalStore, StorageError

    down, failed = threading.Event(), threading.Event()

    class Outage(LocalStore):  # a local folder that refuses writes while `down` is set
        def put_bytes(self, key: str, data: bytes) -> None:
            if down.is_set():
                failed.set()
                raise StorageError(f"{self.uri(key)}: S3 endpoint unreachable (test outage)", transient=True)
            super().put_bytes(key, data)

    run, logs = Outage(tmp_path / "run"), []
    writer = ckpt.CheckpointWriter(run, keep_last=5, log=logs.append)
    picture = lambda step: ckpt.Render(lambda: f"picture {step}".encode())  # noqa: E731
    down.set()
    writer.save(_state(1), {"samples/1.png": picture(1)})  # taken by the writer, retried
    assert failed.wait(10)
    writer.save(_state(2), {"samples/2.png": picture(2), "watchdog.json": b"alarm at 2", "note-2": b"two"})
    writer.save(_state(3), {"samples/3.png": picture(3), "note-2": b"three"})  # replaces step 2
    writer.save(_state(4), {"samples/4.png": picture(4)})  # replaces step 3, which carries step 2's
    down.clear()
    writer.close()
    assert [step for step, _ in ckpt.list_checkpoints(run)] == [1, 4]
    assert run.get_bytes("watchdog.json") == b"alarm at 2" and run.get_bytes("note-2") == b"three"
    assert sorted(run.list("samples")) == ["samples/1.png", "samples/4.png"]
    assert "checkpoint step 2 replaced by step 3 (the store is still unreachable); its watchdog.json written " \
           "with it" in logs
    assert "checkpoint step 3 replaced by step 4 (the store is still unreachable); its watchdog.json, note-2 " \
           "written with it" in logs


def _flip_byte(run, key: str, at: int = -100) -> None:
    data = bytearray(run.get_bytes(key))
    data[at] ^= 0x01
    run.put_bytes(key, bytes(data))


def _written(run, steps=(1, 2, 3), keep_last=3):
    for step in steps:
        ckpt.write_checkpoint(run, ckpt.to_host(_state(step))[0], keep_last=keep_last)


def test_every_pointer_and_list_entry_records_the_files_sha256(store_uri):
    run = open_store(store_uri)
    _written(run, keep_last=2)
    listed = run.get_json("checkpoints.json")["checkpoints"]
    assert [e["step"] for e in listed] == [2, 3]  # pruned ones leave the list with their files
    for entry in listed:
        assert entry["sha256"] == ckpt.sha256(run.get_bytes(entry["key"]))
    assert ckpt.read_pointer(run)["sha256"] == listed[-1]["sha256"]


def test_a_checkpoint_outside_a_run_is_read_once_and_named_by_its_sha256(store_uri, monkeypatch):
    run = open_store(store_uri)
    _written(run)
    blob = run.get_bytes("checkpoints/step-0000003.pt")
    run.put_bytes("shared/step-3.pt", blob)  # a checkpoint copied out of its run (to fine-tune from)
    reads = []
    read = type(run).get_bytes
    monkeypatch.setattr(type(run), "get_bytes", lambda store, key: reads.append(store.uri(key)) or read(store, key))
    uri = run.uri("shared/step-3.pt")
    state, where, origin = ckpt.load_chosen(uri)
    assert state["step"] == 3 and where is None
    assert origin == {"which": "named", "uri": uri, "sha256": ckpt.sha256(blob)}
    assert reads == [uri]  # one read, for the state and its digest both


def test_a_flipped_byte_is_refused_by_every_load_naming_the_file(store_uri):
    run = open_store(store_uri)
    _written(run)
    _flip_byte(run, "checkpoints/step-0000003.pt")
    for load in (lambda: ckpt.load(store_uri), lambda: ckpt.load(store_uri + "/checkpoints/step-0000003.pt")):
        with pytest.raises(ckpt.CheckpointError, match=r"step-0000003\.pt: damaged: its sha256 is") as refused:
            load()
        assert "\n" not in str(refused.value)
    assert ckpt.load(store_uri + "/checkpoints/step-0000002.pt")["step"] == 2  # an intact one still loads


@pytest.mark.parametrize("damage", ["flipped byte", "no latest.json", "latest.json is a folder",
                                    "latest.json garbage", "latest.json names a missing file"])
def test_resume_falls_back_to_the_newest_intact_checkpoint(tmp_path, damage):
    run = open_store(str(tmp_path / "run"))
    _written(run)
    if damage == "flipped byte":
        _flip_byte(run, "checkpoints/step-0000003.pt")
    elif damage == "no latest.json":
        run.delete("latest.json")
    elif damage == "latest.json is a folder":
        run.delete("latest.json")
        (tmp_path / "run" / "latest.json").mkdir()
    elif damage == "latest.json garbage":
        run.put_bytes("latest.json", b"{not json")
    else:
        run.delete("checkpoints/step-0000003.pt")
    said = []
    state, entry = ckpt.load_for_resume(run, said.append)
    assert entry["step"] == state["step"] and entry["key"] == f"checkpoints/step-000000{state['step']}.pt"
    expected = 2 if damage in ("flipped byte", "latest.json names a missing file") else 3
    assert state["step"] == expected
    assert said[0].startswith("cannot resume from latest.json")
    assert f"resuming from checkpoints/step-000000{expected}.pt, the newest intact checkpoint" in said[-1]
    if damage == "flipped byte":
        assert "skipped checkpoints/step-0000003.pt" in said[-1]


def test_a_checkpoint_the_store_cannot_serve_now_is_not_taken_for_a_damaged_one(bucket, moto_endpoint, monkeypatch):
    """The newest checkpoint's download cut (the store away, not the file damaged): resume raises the
    transient StorageError, for the flow's retry, instead of falling back to an older checkpoint and
    pointing latest.json at it (its steps trained again, their files overwritten)."""
    from urllib.parse import urlparse

    from fault_proxy import FaultProxy

    from facegan.errors import StorageError

    _written(open_store(f"{bucket}/run"))  # steps 1, 2, 3; latest.json names 3
    target = urlparse(moto_endpoint)
    proxy = FaultProxy((target.hostname, target.port))
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
        run, said = open_store(f"{bucket}/run"), []
        proxy.cut(f"GET /{bucket.removeprefix('s3://')}/run/checkpoints/step-0000003.pt".encode())
        with pytest.raises(StorageError) as raised:
            ckpt.load_for_resume(run, said.append)
        assert raised.value.transient and proxy.cuts >= 1 and said == [], (raised.value, said)
        proxy.cut(None)
        assert ckpt.load_for_resume(run, said.append)[0]["step"] == 3 and said == []  # once the store serves it
    finally:
        proxy.close()


def test_a_folder_of_unverifiable_checkpoints_is_never_started_afresh(tmp_path):
    run = open_store(str(tmp_path / "run"))
    assert ckpt.load_for_resume(run, print) == (None, None)  # an empty folder is a new run
    _written(run)
    run.delete("latest.json")
    run.delete("checkpoints.json")
    with pytest.raises(ckpt.CheckpointError, match=r"holds 3 checkpoint\(s\) \(checkpoints/step-0000001.pt .. "
                                                   r"checkpoints/step-0000003.pt\) but none that can be verified"):
        ckpt.load_for_resume(run, print)
    _written(run, steps=(4,))  # a new list, but every listed file damaged: still refused
    run.delete("latest.json")
    _flip_byte(run, "checkpoints/step-0000004.pt")
    with pytest.raises(ckpt.CheckpointError, match="lists only damaged ones"):
        ckpt.load_for_resume(run, lambda _: None)


@pytest.mark.parametrize("step", [-5, True, 1e30, 10**12, "7"])
def test_a_stored_step_that_no_run_can_be_at_is_refused(step):
    state = ckpt.to_host(_state(1))[0]
    state["step"] = step
    with pytest.raises(ckpt.CheckpointError, match=r"x.pt: damaged checkpoint, step .* is not an integer|"
                                                   r"x.pt: damaged checkpoint, step missing"):
        ckpt.from_bytes(ckpt.to_bytes(state), "x.pt")


@pytest.mark.parametrize("pointer", [{"step": -5, "key": "checkpoints/step-0000003.pt"},
                                     {"step": 3, "key": "../../etc/passwd"},
                                     {"step": 3, "key": "checkpoints/step-0000003.pt", "sha256": "x"},
                                     ["checkpoints/step-0000003.pt"]])
def test_a_damaged_pointer_is_named(tmp_path, pointer):
    run = open_store(str(tmp_path / "run"))
    run.put_json("latest.json", pointer)
    with pytest.raises(ckpt.CheckpointError, match=r"latest.json: damaged pointer, it "):
        ckpt.load(str(tmp_path / "run"))
