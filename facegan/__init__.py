"""facegan: DCGAN training on CelebA faces, from raw images to nightly galleries, and CycleGAN
attribute swaps (makeup on/off) on the same data.

Modules: `config` (frozen run configs and the option table), `errors` (one-line errors),
`runtime` (device, precision, seeding, signals), `models` (DCGAN G/D), `cyclegan` (ResNet
generator, PatchGAN), `prepare` (raw images and attribute tables -> dataset), `attributes`
(CelebA's attribute table), `data` (dataset format, load, batch sampler), `storage` (s3:// and
local stores), `runfolder` (a run's keys and metric streams), `lease` (one trainer per run),
`checkpoint` (complete, resumable checkpoints), `losses`, `schedule` (learning rate), `train`
(the DCGAN loop), `translate` (the attribute-swap loop, apply), `sample`, `gallery`, `metrics`
(FID), `images` (sample grids), `plots` (loss and FID curves), `augment`, `presets`,
`distributed`, `synthetic` (demo data), `cli`.
"""

__version__ = "0.1.0"
