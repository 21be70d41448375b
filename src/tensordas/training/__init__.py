"""What every task shares: building the compared optimizers, driving them with one step function,
and one training loop for classifiers."""

from .loop import LR_SCHEDULES, LoopConfig, TrainResult, evaluate, load_checkpoint, train_classifier
from .optimizers import (
    BASE_OPTIMIZERS,
    METHODS,
    ComparisonSettings,
    OptimizerConfig,
    build_optimizer,
    check_device,
    compared_optimizers,
    optimizer_step,
    synchronize,
)

__all__ = [
    "BASE_OPTIMIZERS",
    "LR_SCHEDULES",
    "METHODS",
    "ComparisonSettings",
    "LoopConfig",
    "OptimizerConfig",
    "TrainResult",
    "build_optimizer",
    "check_device",
    "compared_optimizers",
    "evaluate",
    "load_checkpoint",
    "optimizer_step",
    "synchronize",
    "train_classifier",
]
