"""Deprecated: moved to :mod:`tensordas.integrations.trainer`; this path is removed in tensordas 0.3."""

from .._deprecation import moved_module

moved_module(__name__, "tensordas.integrations.trainer")
