"""Training: window sampling, fine-tuning, SVMs with hard-negative mining, ridge box regression,
checkpoints, and :func:`train` which runs them in order for one run folder."""

from detect.training.checkpoint import save_checkpoint
from detect.training.pipeline import TrainResult, train

__all__ = ["TrainResult", "save_checkpoint", "train"]
