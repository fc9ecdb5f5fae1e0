import json
import shutil

import numpy as np
import pytest
import torch
from helpers import tiny_config

from facegan import checkpoint as ckpt
from facegan.cli import main
from facegan.loop import Hooks, fit
from facegan.metrics.fid import FIDError, FIDTracker, RunningStats, frechet_distance, load_weights
from facegan.storage import open_store


def _sqrtm_psd(m):
    w, v = np.linalg.eigh(m)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def test_frechet_distance_closed_form_diagonal():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 1.0, 1.0])
    expected = 1 + 0 + 4 + (1 + 4 - 2 * 2) + (4 + 1 - 2 * 2) + (9 + 1 - 2 * 3)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, abs=1e-9)


def test_frechet_distance_matches_symmetric_form_on_random_covariances():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    s1, s2 = a @ a.T + np.eye(6), b @ b.T + 0.5 * np.eye(6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    r1 = _sqrtm_psd(s1)
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2) - 2 * np.trace(_sqrtm_psd(r1 @ s2 @ r1))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-8)


def test_running_stats_equal_numpy_and_a_set_scores_zero_against_itself():
    feats = torch.randn(300, 8, generator=torch.Generator().manual_seed(1))
    stats = RunningStats(8)
    for chunk in feats.split(37):
        stats.add(chunk)
    mu, sigma = stats.finish()
    assert np.allclose(mu, feats.double().mean(0).numpy())
    assert np.allclose(sigma, np.cov(feats.double().numpy(), rowvar=False))
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-8


def test_full_fid_pipeline_with_cached_real_stats(fid_weights, dataset32, tmp_path):
    ds = tmp_path / "ds"
    shutil.copytree(dataset32, ds)
    logs = []
    tracker = FIDTracker.create(str(ds), samples=12, weights_uri=fid_weights, log=logs.append, batch=5)
    cached = [p.name for p in ds.glob("fid-stats-*-12.npz")]
    assert len(cached) == 1 and "computing real statistics" in logs[0]
    again = FIDTracker.create(str(ds), samples=12, weights_uri=fid_weights, log=logs.append)
    assert "real statistics from" in logs[1]
    assert np.array_equal(again.mu, tracker.mu)
    p = tracker.protocol
    assert p["samples"] == 12 and p["reference"]["images"] == 12 and "299" in p["resize"]
    assert p["weights"]["name"].startswith("pt_inception-random-")
    # a generator scores higher than the real set against itself, and deterministically
    run = str(tmp_path / "run")
    fit(tiny_config(str(ds), run, steps=2), Hooks(log=lambda *_: None))
    from facegan.sample import load_generator, noise_sampler

    gen = load_generator(run)
    score = tracker.score(noise_sampler(gen.net, gen.z_dim, tracker.device))
    assert score > 1e-3 and score == tracker.score(noise_sampler(gen.net, gen.z_dim, tracker.device))


def test_weights_checks(fid_weights, tmp_path):
    net, info = load_weights(fid_weights)
    assert info["sha256"].startswith(fid_weights.rsplit("-", 1)[1][:8])
    wrong = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    shutil.copy(fid_weights, wrong)  # right name, wrong bytes
    with pytest.raises(FIDError, match="does not match the hash prefix in the file name 6726825d"):
        load_weights(str(wrong))
    with pytest.raises(FIDError, match="does not match the configured sha256"):
        load_weights(fid_weights, sha256="0" * 64)
    with pytest.raises(FIDError, match="put pt_inception-2015-12-05-6726825d.pth there"):
        load_weights(str(tmp_path / "missing" / "pt_inception-2015-12-05-6726825d.pth"))
    bad = tmp_path / "bad.pth"
    torch.save({"w": torch.zeros(1)}, bad)
    import hashlib

    digest = hashlib.sha256(bad.read_bytes()).hexdigest()
    with pytest.raises(FIDError, match="not FID InceptionV3 weights"):
        load_weights(str(bad), sha256=digest)


def test_weights_from_s3(fid_weights, bucket):
    from facegan.storage import split_uri

    name = fid_weights.rsplit("/", 1)[1]
    store = open_store(bucket + "/models")
    store.put_file(name, fid_weights)
    _, info = load_weights(store.uri(name))
    assert info["uri"].startswith("s3://")
    assert split_uri(store.uri(name))[1] == name


def test_fid_during_training_writes_metrics_and_best(fid_weights, dataset32, tmp_path):
    cfg = tiny_config(dataset32, str(tmp_path / "run"), steps=6, ckpt_every=2, keep_last=1,
                      metric_every=2, metric_samples=8, metric_weights=fid_weights, metric_resize=75)
    fit(cfg, Hooks(log=lambda *_: None))
    run = open_store(cfg.run)
    fids = [json.loads(x) for x in run.get_bytes("metric-fid.jsonl").decode().splitlines()]  # FID's own stream
    assert [r["step"] for r in fids] == [2, 4, 6]
    assert all("fid" not in json.loads(x) for x in run.get_bytes("metrics.jsonl").decode().splitlines())
    assert fids[0]["fid_protocol"]["samples"] == 8
    best = ckpt.read_pointer(run, ckpt.BEST)
    best_step = min(fids, key=lambda r: r["fid"])["step"]
    assert best["step"] == best_step and best["metric"]["name"] == "fid"
    kept = [s for s, _ in ckpt.list_checkpoints(run)]
    assert kept == sorted({6, best_step})  # newest one plus the best
    # FID evaluation does not disturb training: same weights as a run without it
    plain = tiny_config(dataset32, str(tmp_path / "plain"), steps=6, ckpt_every=2)
    fit(plain, Hooks(log=lambda *_: None))
    a, b = ckpt.load(cfg.run), ckpt.load(plain.run)
    assert all(torch.equal(a["G"][k], b["G"][k]) for k in a["G"])


def test_fid_cli(fid_weights, dataset32, tmp_path, capsys):
    run = str(tmp_path / "run")
    fit(tiny_config(dataset32, run, steps=2), Hooks(log=lambda *_: None))
    assert main(["fid", run, "--dataset", dataset32, "--samples", "6", "--weights", fid_weights]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["fid"] > 0 and out["protocol"]["samples"] == 6 and out["step"] == 2
    assert main(["fid", run, "--dataset", dataset32, "--weights", str(tmp_path / "none.pth")]) == 2
    assert "FID weights" in capsys.readouterr().err
