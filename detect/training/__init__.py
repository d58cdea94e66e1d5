"""Training: window sampling, fine-tuning (a :class:`~detect.training.trainer.Trainer` with the
hooks of :mod:`detect.training.hooks`), SVMs with hard-negative mining, ridge box regression,
checkpoints, and :func:`train` which runs them in order for one run folder."""

from detect.training.checkpoint import save_checkpoint
from detect.training.pipeline import TrainResult, train

__all__ = ["TrainResult", "save_checkpoint", "train"]
