"""tensordas: Deviation-Aware Scaling (DAS) — SAM's first-order drift of the core norms of tensorized
models, applied explicitly in one forward and backward pass, and the comparisons that measure whether it
delivers SAM's gain (README: on our bundled experiments it does not)."""

# td.adapters without an import of its own; integrations registers the PEFT and tltorch core-group finders and
# Lightning's SAM closure check (importing none of those packages).
from . import adapters, integrations  # noqa: F401
from .core_groups import CoreGroup, find_core_groups, register_core_group_finder, unregister_core_group_finder
from .layers import TensorizedConv2d, TensorizedLinear, from_dense, tensorize
from .metrics import GroupStats, group_stats, norm_deviation, norm_grad_covariance
from .models import CPModel, TRModel, TTModel, TuckerModel
from .networks import available_networks, build_network
from .optim import BAR, DAS, MSAM, SAM

__version__ = "0.1.0"

__all__ = [
    "BAR",
    "DAS",
    "MSAM",
    "SAM",
    "CoreGroup",
    "CPModel",
    "GroupStats",
    "TRModel",
    "TTModel",
    "TensorizedConv2d",
    "TensorizedLinear",
    "TuckerModel",
    "available_networks",
    "build_network",
    "from_dense",
    "find_core_groups",
    "group_stats",
    "norm_deviation",
    "norm_grad_covariance",
    "register_core_group_finder",
    "tensorize",
    "unregister_core_group_finder",
]
