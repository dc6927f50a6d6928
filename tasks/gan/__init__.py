"""GAN: train a DCGAN, judge it with the champion classifier's features, gate it.

plan.py resolves the auto values; loop.py trains (losses.py, augment.py: DiffAugment, ema.py,
batches.py); samples.py draws images and the sample grid; metrics.py measures the distance
(a Fréchet distance on the classifier's features) and coverage; gates.py gates the generator;
store.py keeps its versions.
"""

from tasks.gan.gates import gan_gates
from tasks.gan.loop import train_gan
from tasks.gan.metrics import champion_distance, evaluate_generator
from tasks.gan.samples import grid_samples, sample_grid_png
from tasks.gan.store import store_generator

__all__ = ["champion_distance", "evaluate_generator", "gan_gates", "grid_samples",
           "sample_grid_png", "store_generator", "train_gan"]
