"""Deprecated: moved to :mod:`tensordas.integrations.tltorch`; this path is removed in tensordas 0.3."""

from .._deprecation import moved_module

moved_module(__name__, "tensordas.integrations.tltorch")
