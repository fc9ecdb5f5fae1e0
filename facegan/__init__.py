"""facegan: GANs that draw new faces from CelebA (DCGAN, a ResNet GAN with SNGAN's recipe), and
CycleGAN attribute swaps (makeup on/off) on the same data: from raw images to exported models.

The Python API (`facegan.api`): ``gen = facegan.load("runs/demo"); faces = gen.faces(16)``.

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


def load(uri: str, device: str = "cpu", ema: bool = True):
    """A trained face generator (`facegan.api.load`: a run, a checkpoint .pt or an export)."""
    from facegan.api import load as load_generator  # torch is imported on first use, not by `import facegan`

    return load_generator(uri, device=device, ema=ema)
