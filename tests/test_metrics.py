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
    cached = [p.name for p in ds.glob("inception-*-12.npz")]
    assert len(cached) == 1 and "computing real statistics" in logs[0]
    assert logs[1] == f"metrics: real statistics cached as {ds / cached[0]}"
    again = FIDTracker.create(str(ds), samples=12, weights_uri=fid_weights, log=logs.append)
    assert logs[2] == f"metrics: real statistics from {ds / cached[0]}"
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
    # a damaged best.json is rebuilt from the run's scores by its next session (here one with nothing to train)
    run.put_bytes(ckpt.BEST, b"[]")
    said = []
    fit(cfg, Hooks(log=said.append))
    assert {k: v for k, v in ckpt.read_pointer(run, ckpt.BEST).items() if k != "written_at"} == \
        {k: v for k, v in best.items() if k != "written_at"}
    assert any("damaged pointer" in line and f"rebuilt from the run's fid scores: step {best_step}" in line
               for line in said), said
    # FID evaluation does not disturb training: same weights as a run without it
    plain = tiny_config(dataset32, str(tmp_path / "plain"), steps=6, ckpt_every=2)
    fit(plain, Hooks(log=lambda *_: None))
    a, b = ckpt.load(cfg.run), ckpt.load(plain.run)
    assert all(torch.equal(a["G"][k], b["G"][k]) for k in a["G"])


def test_score_cli_gives_a_checkpoint_the_scores_its_run_gave_it(fid_weights, dataset32, tmp_path, capsys):
    """`facegan score` (alias `facegan fid`) of a run's checkpoint: the figures the run wrote for
    that step (one registry, one sampler, one Inception pass), and the protocol beside them. Equal
    within 1e-6, not to the bit: the run scores its G_ema in channels_last (the training layout),
    `load_generator` builds the default layout, whose convolutions sum in another order."""
    run = str(tmp_path / "run")
    every = "fid,kid,precision,recall"
    fit(tiny_config(dataset32, run, steps=2, ckpt_every=2, metric_every=2, metric_samples=6,
                    metric_weights=fid_weights, metric_resize=75, metrics=every), Hooks(log=lambda *_: None))
    rows = {name: json.loads(open_store(run).get_bytes(f"metric-{name}.jsonl").decode().splitlines()[-1])
            for name in every.split(",")}
    args = [run, "--dataset", dataset32, "--samples", "6", "--resize", "75", "--weights", fid_weights]
    assert main(["score", *args, "--metrics", every]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["step"] == 2 and out["generator"] == "G_ema"
    for name, row in rows.items():
        assert row["step"] == 2 and out[name] == pytest.approx(row[name], rel=1e-6), (name, out[name], row[name])
        assert {k: v for k, v in out["protocol"].items() if k in row[f"{name}_protocol"]} == row[f"{name}_protocol"]
    assert out["kid_std"] == pytest.approx(rows["kid"]["kid_std"], rel=1e-6) and out["protocol"]["k"] == 3
    assert main(["fid", *args]) == 0  # FID alone, as before the other metrics: the same score
    alone = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert alone["fid"] == out["fid"] and "kid" not in alone and alone["protocol"] == rows["fid"]["fid_protocol"]
    for metrics, said in (("fid,is", "metric 'is' is unknown"), (",fid", "has an empty name")):
        assert main(["score", *args, "--metrics", metrics]) == 2
        err = capsys.readouterr().err.strip()
        assert said in err and "\n" not in err, err
    assert main(["fid", run, "--dataset", dataset32, "--weights", str(tmp_path / "none.pth")]) == 2
    assert "FID weights" in capsys.readouterr().err


def test_too_few_images_for_a_metric_is_one_line_before_any_training(fid_weights, raw_faces, dataset32, tmp_path,
                                                                       capsys):
    """Each metric says how many images it needs (FID and KID 2; precision and recall k + 1 = 4,
    each image and its 3 nearest others): fewer asked for, or a dataset holding fewer, is a one-line
    error before a step is trained or a run folder made (precision and recall were a traceback,
    and KID of one image wrote NaN scores and a NaN best.json); 4 images score."""
    from facegan.config import ConfigError
    from facegan.prepare import prepare

    small = str(tmp_path / "three")
    prepare(raw_faces, small, resolution=32, workers=1, limit=3, log=lambda *_: None)
    run = str(tmp_path / "run")
    fit(tiny_config(dataset32, run, steps=2, ckpt_every=2), Hooks(log=lambda *_: None))
    common = ["--resize", "75", "--weights", fid_weights]
    train = ["train", "--dataset", small, "--preset", "udacity32", "--ngf", "8", "--ndf", "8", "--batch-size", "2",
             "--steps", "2", "--ckpt-every", "2", "--metric-every", "2", "--metric-weights", fid_weights,
             "--metric-resize", "75", "--device", "cpu"]
    for args, said in (
            (["score", run, "--dataset", small, "--samples", "10", "--metrics", "fid,precision", *common],
             f"{small} holds 3 images, too few to score: precision needs at least 4 images"),
            ([*train, "--run", str(tmp_path / "r1"), "--metric-samples", "10", "--metrics", "kid,recall"],
             f"{small} holds 3 images, too few to score: recall needs at least 4 images"),
            ([*train, "--run", str(tmp_path / "r2"), "--metric-samples", "1", "--metrics", "kid"],
             "metric_samples=1: kid needs at least 2 images"),
            (["score", str(tmp_path / "nothing"), "--dataset", small, "--samples", "3", "--metrics", "recall"],
             "samples=3: recall needs at least 4 images")):  # said before the checkpoint is looked for
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip()
        assert said in err and "\n" not in err, err
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()
    with pytest.raises(ConfigError, match="metric_samples=3: recall needs at least 4 images"):
        fit(tiny_config(dataset32, str(tmp_path / "r3"), metric_every=2, ckpt_every=2, metric_samples=3,
                        metrics="fid,recall"), Hooks(log=lambda *_: None))
    assert not (tmp_path / "r3").exists()
    # a run saved with too few (as earlier code let it: KID of one image) still loads, and resumes
    # once given more; the option may change on resume
    saved = [*train, "--run", str(tmp_path / "old"), "--dataset", dataset32, "--metric-samples", "2",
             "--metrics", "kid"]
    assert main(saved) == 0
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    (tmp_path / "old" / "config.json").write_text(json.dumps({**config, "metric_samples": 1}))
    resume = ["train", "--dataset", dataset32, "--run", str(tmp_path / "old"), "--steps", "4"]
    assert main(resume) == 2 and "metric_samples=1: kid needs at least 2 images" in capsys.readouterr().err
    assert main([*resume, "--metric-samples", "2"]) == 0
    assert [json.loads(x)["step"] for x in (tmp_path / "old" / "metric-kid.jsonl").read_text().splitlines()] == [2, 4]
    assert main(["score", run, "--dataset", dataset32, "--samples", "4", "--metrics", "precision,recall", *common]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 <= out["precision"] <= 1 and 0 <= out["recall"] <= 1 and out["protocol"]["samples"] == 4


# ------------------------------------------------------------------ KID, precision, recall; one pass; 8 bits


def _clusters(n: int, seed: int, offset: float = 0.0, d: int = 64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=gen) + offset


def test_kid_and_precision_recall_give_the_known_answers():
    from facegan.metrics import manifold
    from facegan.metrics.kid import kid

    real = _clusters(200, 0)
    same, far = _clusters(200, 1), _clusters(200, 2, offset=50.0)
    radii = manifold.radii(real)
    # identical sets: every point in the other's manifold; KID of two draws of one law near 0
    assert manifold.share_inside(real, real, radii) == 1.0
    mean, std = kid(real, same, subsets=20, subset_size=100)
    assert abs(mean) < 3 * std + 1e-3
    # disjoint sets: nothing inside, and a large KID
    assert manifold.share_inside(far, real, radii) == 0.0
    assert manifold.share_inside(real, far, manifold.radii(far)) == 0.0
    assert kid(real, far, subsets=20, subset_size=100)[0] > 100 * abs(mean)
    # a subset: all of it is real (precision 1), it covers only part of the real set (recall < 1)
    part = real[:40]
    assert manifold.share_inside(part, real, radii) == 1.0
    assert manifold.share_inside(real, part, manifold.radii(part)) < 1.0


def test_kid_and_precision_recall_equal_torch_fidelitys_on_the_same_features():
    """torch-fidelity (a test-only dependency) on the same features: its KID (same subsets, seed
    2020, float32 numpy against our float64) and its precision/recall (k = 3)."""
    from torch_fidelity.metric_kid import kid_features_to_metric
    from torch_fidelity.metric_prc import calculate_precision_recall_part

    from facegan.metrics import manifold
    from facegan.metrics.kid import kid
    from facegan.metrics.kid import mmd2_unbiased as kid_mmd2

    real, generated = _clusters(300, 3, d=128).abs() ** 1.5, _clusters(300, 4, offset=0.3, d=128).abs() ** 1.5
    theirs = kid_features_to_metric(generated, real, kid_subsets=50, kid_subset_size=200, rng_seed=2020,
                                    kid_kernel="poly", kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None,
                                    kid_kernel_poly_coef0=1, verbose=False)
    mean, std = kid(real, generated, subsets=50, subset_size=200)
    assert mean == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-4)
    assert std == pytest.approx(theirs["kernel_inception_distance_std"], rel=1e-3)
    precision, recall = calculate_precision_recall_part(generated, real, 3, 10000)
    assert manifold.share_inside(generated, real, manifold.radii(real)) == pytest.approx(precision, abs=1e-9)
    assert manifold.share_inside(real, generated, manifold.radii(generated)) == pytest.approx(recall, abs=1e-9)
    assert 0 < precision < 1 and 0 < recall < 1  # a case where both can be wrong
    # sets no larger than a subset: every subset is both whole sets, computed once, no spread
    whole = kid(real, generated, subsets=50, subset_size=300)
    assert whole == (kid_mmd2(generated.double().numpy(), real.double().numpy()), 0.0)
    p, q = torch.randperm(300), torch.randperm(300)  # what a subset drew: both sets, in another order
    assert whole[0] == pytest.approx(kid_mmd2(generated[p].double().numpy(), real[q].double().numpy()), rel=1e-12)


def test_fid_agrees_with_pytorch_fid_on_the_same_images_and_weights(fid_weights, dataset32, tmp_path, monkeypatch):
    """pytorch-fid 0.3.0 (a test-only dependency), given the same random weights as the real file
    (through torch hub's cache, under the real file's name) and the same 8-bit images."""
    import shutil as sh

    from pytorch_fid.fid_score import calculate_frechet_distance
    from pytorch_fid.inception import InceptionV3

    from facegan import data
    from facegan.metrics.inception import WEIGHTS_NAME

    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    sh.copy(fid_weights, hub / WEIGHTS_NAME)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    images, _ = data.load(dataset32)
    # 8-bit faces against others with their colour channels reversed: a distance well above the round-off
    # of either method's matrix square root (two sets of like faces score 0.3-0.6, where the last digits are noise)
    real, fake = images[:32], images[32:64].flip(3)
    tracker = FIDTracker.create(dataset32, samples=32, weights_uri=fid_weights, log=lambda *_: None, batch=16)

    def sampler(n, batch):
        for i in range(0, n, batch):
            yield data.to_unit(fake[i:i + batch])

    from facegan.metrics.fid import statistics

    generated = tracker.features.generated(sampler)
    theirs_net = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()  # pytorch-fid's FID network

    def activations(batch_uint8):  # pytorch-fid's own pipeline: [0, 1] in, resized to 299, normalised inside
        with torch.no_grad():
            return torch.cat([theirs_net(batch_uint8[i:i + 16].permute(0, 3, 1, 2).float() / 255)[0].flatten(1)
                              for i in range(0, len(batch_uint8), 16)]).double()

    theirs_fake, theirs_real = activations(fake), activations(real)
    # the Inception pass: the same features to 1e-6 of their scale (pytorch-fid resizes before normalising)
    for ours_rows, theirs_rows in ((generated, theirs_fake), (tracker.features.real, theirs_real)):
        assert (ours_rows.double() - theirs_rows).abs().max() <= 1e-6 * theirs_rows.abs().max()
    stats = lambda a: (a.mean(0).numpy(), np.cov(a.numpy(), rowvar=False))  # noqa: E731 - pytorch-fid's
    theirs = calculate_frechet_distance(*stats(theirs_fake), *stats(theirs_real))  # one scipy sqrtm: ~30 s here
    # our statistics are pytorch-fid's of the same rows, to float64 round-off (measured: means equal, covariances
    # 7.3e-15 of their scale); checked directly, not through a second scipy sqrtm (which took 30 s of the test)
    for (mu, sigma), rows in ((statistics(generated), generated), ((tracker.mu, tracker.sigma), tracker.features.real)):
        their_mu, their_sigma = stats(rows.double())
        assert np.abs(mu - their_mu).max() <= 1e-12 * np.abs(their_mu).max()
        assert np.abs(sigma - their_sigma).max() <= 1e-12 * np.abs(their_sigma).max()
    # end to end within 1e-5 (measured 2.8e-7 at FID 23.3): our distance sums the square roots of the
    # eigenvalues of S1 S2, pytorch-fid takes scipy's sqrtm. With 32 samples both covariances have rank 31 of
    # 2048; on two sets of 48 like faces (FID 0.28) the two methods' round-off differed by 2e-5 of the score.
    assert tracker.from_features(generated)["fid"] == pytest.approx(theirs, rel=1e-5)


def test_one_inception_pass_feeds_every_metric_and_generated_images_are_rounded(fid_weights, dataset32, tmp_path):
    from facegan import metrics as registry
    from facegan.metrics.inception import to_8_bits
    from facegan.sample import load_generator, noise_sampler

    run = str(tmp_path / "run")
    fit(tiny_config(dataset32, run, steps=2), Hooks(log=lambda *_: None))
    gen = load_generator(run)
    cfg = tiny_config(dataset32, run, metric_samples=16, metric_weights=fid_weights, metric_resize=75)
    shared = {}
    scorers = {name: registry.get(name).scorers().scorer(cfg, None, None, "cpu", lambda *_: None, shared)
               for name in ("fid", "kid", "precision", "recall")}
    assert len({id(s.features) for s in scorers.values()}) == 1  # one network, one set of real features
    calls = []

    def counted(n, batch):
        calls.append(n)
        yield from noise_sampler(gen.net, gen.z_dim, torch.device("cpu"))(n, batch)

    rows = registry.score_all(scorers, counted)
    assert calls == [16]  # one pass over the generated images for all four
    assert set(rows) == {"fid", "kid", "precision", "recall"} and set(rows["kid"]) == {"kid", "kid_std"}
    assert 0 <= rows["precision"]["precision"] <= 1 and 0 <= rows["recall"]["recall"] <= 1
    assert rows["fid"]["fid"] == scorers["fid"].score(noise_sampler(gen.net, gen.z_dim, torch.device("cpu")))
    # generated images are scored as their 8-bit PNGs: rounding first changes nothing ...
    plain = noise_sampler(gen.net, gen.z_dim, torch.device("cpu"))

    def rounded(n, batch):
        for images in plain(n, batch):
            yield to_8_bits(images)

    assert scorers["fid"].score(rounded) == rows["fid"]["fid"]
    # ... while scoring the floats, as dd87acf did, gives another figure
    from facegan.metrics.fid import frechet_distance, statistics

    net = scorers["fid"].features.net
    floats = torch.cat([net(x.float().clamp(-1, 1)) for x in plain(16, 50)])
    assert frechet_distance(*statistics(floats), scorers["fid"].mu, scorers["fid"].sigma) != rows["fid"]["fid"]


def test_a_run_scores_every_metric_listed_and_best_follows_the_first(fid_weights, dataset32, tmp_path):
    cfg = tiny_config(dataset32, str(tmp_path / "run"), steps=4, ckpt_every=2, metric_every=2, metric_samples=8,
                      metric_weights=fid_weights, metric_resize=75, metrics="recall,fid,kid,precision")
    fit(cfg, Hooks(log=lambda *_: None))
    run = open_store(cfg.run)
    for name in ("fid", "kid", "precision", "recall"):
        rows = [json.loads(x) for x in run.get_bytes(f"metric-{name}.jsonl").decode().splitlines()]
        assert [r["step"] for r in rows] == [2, 4] and all(np.isfinite(r[name]) for r in rows), name
        assert rows[0][f"{name}_protocol"]["generated"] == "rounded to 8 bits"
    best = ckpt.read_pointer(run, ckpt.BEST)
    recalls = [json.loads(x) for x in run.get_bytes("metric-recall.jsonl").decode().splitlines()]
    assert best["metric"]["name"] == "recall"  # higher is better: the best is the highest
    assert best["metric"]["value"] == max(r["recall"] for r in recalls)
