"""The gan section: the gan-pipeline's training, evaluation and gate."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from evergreen.config.section import Section


class GanConfig(Section):
    """The gan-pipeline: GAN training, its evaluation by the champion classifier, its gate."""

    steps: Literal["auto"] | Annotated[int, Field(ge=1, le=10_000_000)] = Field(
        "auto", description="generator steps; auto: passes x train size / batch_size, at least "
        "min_steps and at most max_steps")
    passes: float = Field(100.0, gt=0.0, description="steps auto: passes over the train split")
    min_steps: int = Field(2000, ge=1, description="steps auto: the floor (a few hundred images "
                           "still get thousands of steps)")
    max_steps: int = Field(4000, ge=1, description="steps auto: the cap")
    minutes: float | None = Field(None, gt=0.0, description="wall-clock cap on training; the run "
                                  "stops at the first step past it (null: none)")
    batch_size: int = Field(32, ge=2, description="at most the train split's size")
    lr: float = Field(5e-4, gt=0.0, description="Adam, generator and discriminator (5e-4: the "
                      "spectral-norm discriminator learns slowly at 2e-4, and CPU steps are few)")
    beta1: float = Field(0.5, ge=0.0, lt=1.0, description="Adam beta1 (DCGAN: 0.5)")
    latent_dim: int = Field(128, ge=2)
    width: Literal["auto"] | Annotated[int, Field(ge=4, le=1024)] = Field(
        "auto", description="channels of the finest feature map; doubled per halving, capped at "
        "8x; auto: 32 up to 32 px, halved per doubling of the side (16 at 64 px, 8 at 128 px), so "
        "the convolutions' cost stays level")
    conditional: bool = Field(True, description="class-conditional generator and discriminator")
    balance_classes: bool = Field(True, description="conditional: draw each batch's classes "
                                  "uniformly, then an image of each, so rare classes are learnt "
                                  "as well as common ones (the coverage gate asks each class for "
                                  "the same share); false: batches follow the data's proportions")
    class_loss_weight: float = Field(1.0, ge=0.0, description="conditional: weight of the "
                                     "discriminator's auxiliary class loss (AC-GAN); 0 = off")
    mode_seeking_weight: float = Field(1.0, ge=0.0, description="weight of the mode-seeking "
                                       "loss (MSGAN) against intra-class collapse; 0 = off")
    augment: list[Literal["color", "translation", "cutout"]] = Field(
        default_factory=lambda: ["color", "translation", "cutout"],
        description="DiffAugment policy: the same differentiable augmentations on real and "
        "generated images before the discriminator, so it cannot memorise a small set; [] = off")
    ema_decay: float = Field(0.999, ge=0.0, lt=1.0, description="the saved generator is an "
                             "exponential moving average of the weights, per step; 0 = the last")
    seed: int = 0
    threads: int = Field(0, ge=0, description="torch threads while training; 0 = torch default "
                         "(every core). With OpenMP's passive waits (the evergreen command sets "
                         "them) two threads ran a 64 px step 1.7x faster than one on 2 quiet "
                         "cores (0.50 against 0.85 s); 1 makes the run the same on any core count")
    samples: int = Field(1000, ge=10, description="generated images evaluated")
    max_distance_ratio: float = Field(0.25, gt=0.0,
                                      description="gate: domain FID / the noise ceiling's")
    max_distance: float | None = Field(None, gt=0.0, description="gate: absolute domain FID")
    min_coverage_ratio: float = Field(0.5, ge=0.0, le=1.0,
                                      description="gate: each class's share of the samples, "
                                      "as a fraction of the uniform share 1/classes")
    champion_tolerance: float = Field(0.0, ge=0.0,
                                      description="relative distance a challenger may lose")

    @model_validator(mode="after")
    def _ordered(self) -> GanConfig:
        if self.min_steps > self.max_steps:
            raise ValueError(f"min_steps {self.min_steps} is above max_steps {self.max_steps}")
        return self
