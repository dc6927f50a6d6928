"""DCGAN generator and spectral-norm discriminator sized to the image shape, class-conditional.

A square image of side S = b * 2**k (3 <= b <= 8, k >= 1) is built from a b x b map
by k stride-2 transposed convolutions: 8 = 4 * 2, 28 = 7 * 4, 32 = 4 * 8, 64 = 4 * 16.
Conditioning (the SNGAN-projection recipe, Miyato & Koyama 2018): class-conditional
BatchNorm in the generator, a projection discriminator (with an optional AC-GAN head).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from evergreen.errors import BadInputError

GENERATOR, DISCRIMINATOR = "dcgan_cbn_generator", "sn_projection_discriminator"


def plan(in_shape: tuple[int, int, int]) -> tuple[int, int]:
    """(base side b, upsampling steps k) for an image of shape (C, S, S)."""
    _, h, w = in_shape
    if h != w:
        raise ValueError(f"the DCGAN needs square images, got {h}x{w} "
                         "(set ingest.image_size to [S, S])")
    base, steps = h, 0
    while base % 2 == 0 and base // 2 >= 3:
        base, steps = base // 2, steps + 1
    if steps == 0 or base > 8:
        raise ValueError(f"the DCGAN cannot build {h}x{w} images: the side must be b * 2**k with "
                         "3 <= b <= 8 and k >= 1 (e.g. 8, 28, 32, 64); set ingest.image_size")
    return base, steps


def widths(width: int, steps: int) -> list[int]:
    """Channels from the finest map (index 0) to the coarsest, doubling, capped at 8 * width."""
    return [min(width * 2 ** i, width * 8) for i in range(steps + 1)]


def init_weights(module: nn.Module) -> None:
    """DCGAN initialisation: conv and linear weights N(0, 0.02)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class ClassBatchNorm(nn.Module):
    """BatchNorm whose scale and shift are looked up per class (plain BatchNorm when y is None)."""

    def __init__(self, channels: int, num_classes: int, conditional: bool):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=not conditional)
        self.gain = nn.Embedding(num_classes, channels) if conditional else None
        self.bias = nn.Embedding(num_classes, channels) if conditional else None
        if conditional:  # start as the identity: gain 1, shift 0
            nn.init.ones_(self.gain.weight)
            nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        h = self.norm(x)
        if self.gain is None:
            return h
        return h * self.gain(y)[:, :, None, None] + self.bias(y)[:, :, None, None]


class Generator(nn.Module):
    """z (N, latent) [+ labels] -> tanh images (N, C, S, S) in [-1, 1]."""

    def __init__(self, in_shape, num_classes: int, latent_dim: int = 128, width: int = 32,
                 conditional: bool = False):
        super().__init__()
        channels, side, _ = in_shape
        self.base, steps = plan(in_shape)
        self.latent_dim, self.num_classes, self.conditional = latent_dim, num_classes, conditional
        chans = widths(width, steps)[::-1]  # coarse -> fine
        self.project = nn.Linear(latent_dim, chans[0] * self.base ** 2)
        self.norms = nn.ModuleList(ClassBatchNorm(c, num_classes, conditional) for c in chans)
        # nearest upsampling + 3x3 conv: no checkerboard, unlike a stride-2 transposed conv
        self.ups = nn.ModuleList(
            nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(c_in, c_out, 3, padding=1,
                                                                 bias=False))
            for c_in, c_out in zip(chans[:-1], chans[1:], strict=True))
        self.to_image = nn.Sequential(nn.Conv2d(chans[-1], channels, 3, padding=1), nn.Tanh())
        self.apply(init_weights)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.conditional and y is None:
            raise ValueError("a conditional generator needs class labels y")
        y = y if self.conditional else None
        h = self.project(z).view(len(z), -1, self.base, self.base)  # (N, C0, b, b)
        h = torch.relu(self.norms[0](h, y))
        for up, norm in zip(self.ups, self.norms[1:], strict=True):
            h = torch.relu(norm(up(h), y))  # (N, C_i, b * 2**i, b * 2**i)
        return self.to_image(h)


class Discriminator(nn.Module):
    """Images (N, C, S, S) in [-1, 1] [+ labels] -> real/fake logits (N,).

    Spectral norm on every layer and no BatchNorm (SNGAN). Conditional: a projection
    discriminator (logit + <embed(y), features>) with an auxiliary class head on the same
    features (AC-GAN): `score` returns both.
    """

    def __init__(self, in_shape, num_classes: int, width: int = 32, conditional: bool = False):
        super().__init__()
        channels, side, _ = in_shape
        base, steps = plan(in_shape)
        chans = widths(width, steps)
        self.conditional = conditional
        layers = [spectral_norm(nn.Conv2d(channels, chans[0], 3, padding=1)), nn.LeakyReLU(0.2)]
        for c_in, c_out in zip(chans[:-1], chans[1:], strict=True):
            layers += [spectral_norm(nn.Conv2d(c_in, c_out, 4, 2, 1)), nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers, nn.Flatten())
        n_features = chans[-1] * base ** 2
        self.head = spectral_norm(nn.Linear(n_features, 1))
        self.embed = spectral_norm(nn.Embedding(num_classes, n_features)) if conditional else None
        self.classify = nn.Linear(n_features, num_classes) if conditional else None

    def score(self, x: torch.Tensor,
              y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(real/fake logits (N,), class logits (N, classes) or None when unconditional)."""
        h = self.features(x)  # (N, F)
        out = self.head(h).squeeze(1)
        if not self.conditional:
            return out, None
        if y is None:
            raise ValueError("a conditional discriminator needs class labels y")
        return out + (self.embed(y) * h).sum(1), self.classify(h)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.score(x, y)[0]


def build_generator(in_shape, num_classes, latent_dim=128, width=32, conditional=False,
                    **_ignored) -> Generator:
    return Generator(tuple(in_shape), num_classes, latent_dim, width, conditional)


def build_discriminator(in_shape, num_classes, width=32, conditional=False,
                        **_ignored) -> Discriminator:
    return Discriminator(tuple(in_shape), num_classes, width, conditional)


GAN_BUILDERS = {GENERATOR: build_generator, DISCRIMINATOR: build_discriminator}


def load_generator(model_dir: Path) -> tuple[Generator, dict[str, Any]]:
    """Rebuild a saved generator from its card and safetensors weights (eval mode)."""
    from nets.io import load_weights, read_card

    card = read_card(model_dir)
    if card["arch"] != GENERATOR:
        raise BadInputError(f"{model_dir / 'model.json'}: arch {card['arch']!r} is not a "
                            f"{GENERATOR}")
    model = build_generator(card["in_shape"], len(card["classes"]), **card.get("options", {}))
    return load_weights(model, model_dir), card
