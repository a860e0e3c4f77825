"""Errors that pintrain raises for user mistakes and failed solves."""

from __future__ import annotations


class PintrainError(Exception):
    """Base class of every error pintrain raises on purpose."""


class OptionError(PintrainError, ValueError):
    """A bad option value; the message names the field and what it allows."""

    def __init__(self, field: str, value: object, allowed: str) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(f"{field}={value!r} is not allowed: {field} must be {allowed}")


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
