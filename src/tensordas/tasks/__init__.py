"""Experiment tasks: library functions behind the ``tensordas`` commands, callable from Python.

Each task module offers a validated config dataclass, ``run_<task>(config) -> result`` and
``write_<task>(result, out_dir)``, which writes through :mod:`tensordas.reporting`.
"""

from .dynamics import DynamicsConfig, DynamicsResult, dynamics_table, plot_dynamics, run_dynamics, write_dynamics

__all__ = ["DynamicsConfig", "DynamicsResult", "dynamics_table", "plot_dynamics", "run_dynamics", "write_dynamics"]
