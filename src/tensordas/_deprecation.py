"""Keyword renames that keep the old keyword working for a while, with a ``DeprecationWarning``."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


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
