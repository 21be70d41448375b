"""What every task shares: building the compared optimizers and driving them with one step function."""

from .optimizers import BASE_OPTIMIZERS, METHODS, OptimizerConfig, build_optimizer, check_device, optimizer_step

__all__ = ["BASE_OPTIMIZERS", "METHODS", "OptimizerConfig", "build_optimizer", "check_device", "optimizer_step"]
