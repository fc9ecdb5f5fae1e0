"""train-cyclegan: train (or resume) an attribute swap (CycleGAN) on a labelled dataset, report as it goes.

The train-dcgan flow trains any family (its `family` parameter); this flow keeps the deployments
users already run, with the swap's own options as its parameters.
"""

from __future__ import annotations

from prefect import flow

from facegan import families
from flows.common import with_option_parameters
from flows.train_dcgan import train_run

FAMILY = families.get(families.SWAP)  # what the train-cyclegan deployments train


def train_cyclegan_fn(dataset_uri: str, run_name: str, store: str | None = None, preset: str | None = None,
                      export: bool = True, **options):
    """Train an attribute swap on `dataset_uri` (prepared with CelebA's attribute table) into
    `{store}/runs/{run_name}`: domain A = faces with `attribute` (e.g. Heavy_Makeup), B = without.
    Re-running resumes it. Every option of the swap's config is a parameter; left empty, an option
    keeps the run's saved value when resuming, else the preset's (cyclegan64, cyclegan128), else
    the library's default; the resolution defaults to the dataset's. With `export` (the default)
    both generators are exported into `{run}/export/` (`facegan export`).
    """
    return train_run(FAMILY.name, dataset_uri, run_name, store, preset, options, export)


FLOW_SIGNATURE = with_option_parameters(train_cyclegan_fn, FAMILY.config)
train_cyclegan = flow(name="train-cyclegan", log_prints=True)(train_cyclegan_fn)
