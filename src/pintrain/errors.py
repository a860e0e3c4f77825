"""Errors that pintrain raises for user mistakes and failed solves."""

from __future__ import annotations

import math

import numpy as np


class PintrainError(Exception):
    """Base class of every error pintrain raises on purpose."""


class OptionError(PintrainError, ValueError):
    """A bad option value; the message names the field and what it allows."""

    def __init__(self, field: str, value: object, allowed: str) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(f"{field}={value!r} is not allowed: {field} must be {allowed}")


def check_int(name: str, value: object, minimum: int, note: str = "") -> None:
    """Raise :class:`OptionError` unless ``value`` is an int (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise OptionError(name, value, f"an int >= {minimum}{note}")


def check_positive(name: str, value: object) -> None:
    """Raise :class:`OptionError` unless ``value`` is a finite real number > 0."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise OptionError(name, value, "a finite float > 0")


class DivergenceError(PintrainError, FloatingPointError):
    """The solve produced non-finite values or a residual that grew past its bound.

    ``level`` and ``step`` say where (``step`` is a fine-grid index), ``iteration`` when.
    """

    def __init__(
        self,
        message: str,
        *,
        iteration: int,
        level: int | None = None,
        step: int | None = None,
        residuals: list[float] | None = None,
    ) -> None:
        self.iteration = iteration
        self.level = level
        self.step = step
        self.residuals = list(residuals or [])
        super().__init__(message)
