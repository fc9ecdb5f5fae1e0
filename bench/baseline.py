"""The canonical DCGAN recipe (pytorch/examples dcgan, the Udacity face projects), as the
baseline: a folder of JPEGs decoded every step by a torch DataLoader with workers, fp32, eager,
`loss.item()` each step (a host sync), identical networks from facegan.models."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from facegan.config import ModelConfig
from facegan.models import Discriminator, Generator


class JpegFolder(Dataset):
    """Decode, flip, scale to [-1, 1] per item, like ImageFolder + transforms."""

    def __init__(self, folder: Path) -> None:
        self.files = sorted(Path(folder).glob("*.jpg"))

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        img = np.asarray(Image.open(self.files[i]).convert("RGB"), dtype=np.float32)
        x = torch.from_numpy(img).permute(2, 0, 1) / 127.5 - 1.0
        return x.flip(2) if torch.rand(()) < 0.5 else x


def run(folder: Path, model: ModelConfig, batch: int, device: torch.device, workers: int,
        windows: int, window_steps: int, warmup: int) -> list[float]:
    """Train and return the seconds of each timed window of `window_steps` steps."""
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True  # as pytorch/examples' dcgan does (no effect on CPU)
    G, D = Generator(model).to(device), Discriminator(model).to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    loader = DataLoader(JpegFolder(folder), batch_size=batch, shuffle=True, num_workers=workers,
                        drop_last=True, persistent_workers=workers > 0, pin_memory=device.type == "cuda")
    times: list[float] = []
    step, start = 0, None
    total = warmup + windows * window_steps
    while step < total:
        for real in loader:
            real = real.to(device)
            z = torch.randn(batch, model.z_dim, device=device)
            fake = G(z)
            out_real, out_fake = D(real), D(fake.detach())
            loss_d = (F.binary_cross_entropy_with_logits(out_real, torch.ones_like(out_real))
                      + F.binary_cross_entropy_with_logits(out_fake, torch.zeros_like(out_fake)))
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
            out = D(fake)
            loss_g = F.binary_cross_entropy_with_logits(out, torch.ones_like(out))
            opt_g.zero_grad()
            loss_g.backward()
            opt_g.step()
            _ = (loss_d.item(), loss_g.item())  # the recipe logs every step: a host sync
            step += 1
            if step == warmup:
                start = time.perf_counter()
            elif step > warmup and (step - warmup) % window_steps == 0:
                now = time.perf_counter()
                times.append(now - start)
                start = now
            if step >= total:
                break
    return times
