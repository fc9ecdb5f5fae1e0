"""facegan: DCGAN training on CelebA faces, from raw images to nightly galleries.

Modules: `config` (frozen run config), `models` (DCGAN G/D), `data` (dataset format, prepare,
load, batch sampler), `storage` (s3:// and local stores), `train` (the loop), `checkpoint`
(complete, resumable checkpoints), `sample`, `images`, `synthetic` (demo data), `cli`.
"""

__version__ = "0.1.0"
