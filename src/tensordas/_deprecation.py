"""Old names kept working for a while: keyword renames (``DeprecationWarning``) and moved modules
(``FutureWarning`` naming the release that removes them, as timm does)."""

from __future__ import annotations

import functools
import importlib
import sys
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

REMOVAL_RELEASE = "tensordas 0.3"


def moved_module(old: str, new: str) -> None:
    """Make module ``old`` (the caller, at import) the module ``new``, warning that ``old`` goes in
    :data:`REMOVAL_RELEASE`. Every name of ``new``, private ones included, is then reachable under ``old``."""
    warnings.warn(
        f"{old} is deprecated and will be removed in {REMOVAL_RELEASE}: import {new} instead",
        FutureWarning,
        stacklevel=3,  # the statement importing ``old`` (the import machinery's frames are skipped)
    )
    sys.modules[old] = importlib.import_module(new)


def renamed_keyword(old: str, new: str) -> Callable[[F], F]:
    """Decorator: a call with ``old=value`` becomes ``new=value`` and warns; positional calls are unchanged.

    Passing both is a ``TypeError`` naming them (as Python does for a keyword given twice).
    """

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if old in kwargs:
                # a classmethod's first argument is the class: name it (``TTModel.from_tensor``)
                where = f"{args[0].__name__}.{fn.__name__}" if args and isinstance(args[0], type) else fn.__qualname__
                if new in kwargs:
                    raise TypeError(f"{where}() got both {old}= and {new}= (use {new}=)")
                warnings.warn(
                    f"{where}(): the keyword {old}= is deprecated, use {new}=",
                    DeprecationWarning,
                    stacklevel=2,
                )
                kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
