"""train-cyclegan: train (or resume) an attribute swap (CycleGAN) on a labelled dataset, report as it goes."""

from __future__ import annotations

from prefect import flow

from facegan import families
from facegan.config import nest_options
from facegan.loop import config_for_run
from flows.common import INPUT_ERRORS, check_run_name, fail, store_root, with_option_parameters
from flows.train_dcgan import pull_dataset, report, train_model

FAMILY = families.get("cyclegan")  # what the train-cyclegan deployments train


def train_cyclegan_fn(dataset_uri: str, run_name: str, store: str | None = None, preset: str | None = None,
                      **options):
    """Train an attribute swap on `dataset_uri` (prepared with CelebA's attribute table) into
    `{store}/runs/{run_name}`: domain A = faces with `attribute` (e.g. Heavy_Makeup), B = without.
    Re-running resumes it. Every option of facegan.config.TranslateConfig is a parameter; left
    empty, an option keeps the run's saved value when resuming, else the preset's (cyclegan64,
    cyclegan128), else the library's default; the resolution defaults to the dataset's.
    """
    try:
        check_run_name(run_name)
        cfg = config_for_run(dataset_uri, f"{store_root(store)}/runs/{run_name}", preset,
                             nest_options(options, FAMILY.config), FAMILY.name)
        pull_dataset(dataset_uri)
    except INPUT_ERRORS as exc:
        return fail(exc)
    outcome = train_model(cfg.to_dict())
    report(cfg, outcome)
    return {"run": cfg.run, "step": outcome["step"], "checkpoint": outcome["checkpoint"]}


FLOW_SIGNATURE = with_option_parameters(train_cyclegan_fn, FAMILY.config)
train_cyclegan = flow(name="train-cyclegan", log_prints=True)(train_cyclegan_fn)
