"""GAN: train a DCGAN and judge it with the champion classifier's features.

plan.py resolves the auto values; loop.py trains (losses.py, augment.py: DiffAugment, ema.py,
batches.py); samples.py draws images and the sample grid; metrics.py measures the distance
(a Fréchet distance on the classifier's features) and coverage. Its gates are
tasks/promote/generator.py, its versions mains/versions.py.
"""

from tasks.gan.loop import train_gan
from tasks.gan.metrics import champion_distance, evaluate_generator
from tasks.gan.samples import grid_samples, sample_grid_png

__all__ = ["champion_distance", "evaluate_generator", "grid_samples", "sample_grid_png",
           "train_gan"]
