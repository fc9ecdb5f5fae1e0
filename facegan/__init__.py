"""facegan: GANs that draw new faces from CelebA (DCGAN, a ResNet GAN with SNGAN's recipe), and
CycleGAN attribute swaps (makeup on/off) on the same data: from raw images to exported models.

The Python API (`facegan.api`): ``gen = facegan.load("runs/demo"); faces = gen.faces(16)``;
``facegan.score("runs/demo", "datasets/faces", metrics="fid,kid")``.

Modules: `config` (frozen run configs and the option table), `errors` (one-line errors),
`runtime` (device, precision, seeding, signals), `memory` (what a setting needs against what the
device has), `models` (DCGAN G/D), `resnet` (SNGAN's ResNet G/D), `cyclegan` (ResNet generator,
PatchGAN), `families` (the registry of model families and their recipes), `loop` (the run
lifecycle of every family), `prepare` (raw images and attribute tables -> dataset), `attributes`
(CelebA's attribute table), `data` (dataset format, load, batch sampler), `storage` (s3:// and
local stores), `runfolder` (a run's keys and metric streams), `lease` (one writer per run or
dataset), `checkpoint` (complete, verified, resumable checkpoints), `losses`, `schedule`
(learning rate), `translate` (applying an attribute swap), `sample` (faces, truncation),
`export` (safetensors, torch.export, ONNX, model cards), `api`, `gallery`, `metrics` (the
registry; FID), `images` (sample grids, 8-bit pixels), `plots` (loss and metric curves),
`augment`, `presets`, `distributed`, `synthetic` (demo data), `cli`.
"""

__version__ = "0.1.0"


_FROM_API = ("load", "score")  # facegan.load, facegan.score: `facegan.api`'s, imported on first use (with torch)


def __getattr__(name: str):
    """`facegan.load` and `facegan.score` (see `facegan.api`): `import facegan` imports no torch."""
    if name in _FROM_API:
        from facegan import api

        return getattr(api, name)
    raise AttributeError(f"module 'facegan' has no attribute {name!r}")
