"""What every task shares: the method registry, optimizer configurations, and the one training engine.

- :mod:`~tensordas.training.methods`: the registry of optimizer methods (base, SAM, DAS, BAR, ...;
  :func:`register_method` adds one) and their options (the fields of :class:`MethodOptions`);
- :mod:`~tensordas.training.optimizers`: :class:`OptimizerConfig`, :class:`ComparisonSettings`,
  :func:`build_optimizer`, :func:`optimizer_step`;
- :mod:`~tensordas.training.engine`: :func:`train`, the loop every gradient-based family runs;
- :mod:`~tensordas.training.loop`: the classification family's use of it (:func:`train_classifier`).
"""

from .engine import (
    CHECKPOINT_FORMAT,
    Batch,
    Checkpoint,
    Epochs,
    Monitor,
    Plan,
    Steps,
    TrainResult,
    core_groups_or_none,
    load_checkpoint,
    q_stats,
    train,
)
from .loop import LR_SCHEDULES, LoopConfig, evaluate, train_classifier
from .methods import (
    BASE_OPTIMIZERS,
    BASE_STRENGTH,
    GRID_SIZE,
    METHODS,
    OPTIONS,
    STRENGTHS,
    Method,
    MethodOptions,
    Option,
    Strength,
    compared_methods,
    get_method,
    method_of,
    option,
    register_method,
    registered_methods,
    unregister_method,
)
from .optimizers import (
    ComparisonSettings,
    OptimizerConfig,
    build_optimizer,
    check_device,
    compared_optimizers,
    method_lr,
    optimizer_step,
    synchronize,
)

__all__ = [
    "BASE_OPTIMIZERS",
    "BASE_STRENGTH",
    "GRID_SIZE",
    "CHECKPOINT_FORMAT",
    "LR_SCHEDULES",
    "METHODS",
    "OPTIONS",
    "STRENGTHS",
    "Batch",
    "Checkpoint",
    "ComparisonSettings",
    "Epochs",
    "LoopConfig",
    "Method",
    "MethodOptions",
    "Monitor",
    "Option",
    "OptimizerConfig",
    "Plan",
    "Steps",
    "Strength",
    "TrainResult",
    "build_optimizer",
    "check_device",
    "compared_methods",
    "compared_optimizers",
    "method_lr",
    "core_groups_or_none",
    "evaluate",
    "get_method",
    "load_checkpoint",
    "method_of",
    "option",
    "optimizer_step",
    "q_stats",
    "register_method",
    "registered_methods",
    "synchronize",
    "train",
    "train_classifier",
    "unregister_method",
]
