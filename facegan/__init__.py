"""facegan: DCGAN training on CelebA faces, from raw images to nightly galleries.

Modules: `config` (frozen run config and the option table), `errors` (one-line errors),
`runtime` (device, precision, seeding, signals), `models` (DCGAN G/D), `prepare` (raw images ->
dataset), `data` (dataset format, load, batch sampler), `storage` (s3:// and local stores),
`runfolder` (a run's keys and metric streams), `lease` (one trainer per run), `checkpoint`
(complete, resumable checkpoints), `losses`, `train` (the loop), `sample`, `gallery`, `metrics`
(FID), `images`, `augment`, `presets`, `distributed`, `synthetic` (demo data), `cli`.
"""

__version__ = "0.1.0"
