"""Train: fit a network on the train split with early stopping on the validation loss, in this
process or in DDP workers; the teacher's auto defaults come from the data.

teacher.py trains the teacher (train_model): adapt.py resolves the auto defaults, and
loop.py's `fit` runs the epochs, with settings.py (FitSettings), losses.py, schedule.py (the
learning rate and the time budget), checkpoint.py (epoch checkpoints and resume), state.py
(what a fit holds), progress.py and augment.py. A DDP job: launcher.py starts torchrun
(loopback.py on one machine), worker.py runs in each process with its replica.py (on CPU
sync_batchnorm.py), and exchange.py is what the leader shares, never a pickle.

worker.py and loopback.py run under `python -m`, and launcher.py is imported for a DDP run
only, so importing this package imports none of them.
"""

from tasks.train.adapt import model_options
from tasks.train.loop import fit
from tasks.train.losses import LossFn, cross_entropy_loss
from tasks.train.settings import FitSettings
from tasks.train.teacher import train_model

__all__ = ["FitSettings", "LossFn", "cross_entropy_loss", "fit", "model_options", "train_model"]
