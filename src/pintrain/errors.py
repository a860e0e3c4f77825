"""Errors that pintrain raises for user mistakes and failed solves."""

from __future__ import annotations

import math
import os

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


class ProblemError(PintrainError, TypeError):
    """A problem object does not keep the protocol (a step returned the wrong shape, dtype, ...)."""


class ResourceError(PintrainError, MemoryError):
    """The requested work cannot fit (memory); the message says how much it needs and what to change."""


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


class NotConvergedError(PintrainError, ArithmeticError):
    """MGRIT stopped at ``max_iter`` above the tolerance: its states are not the serial answer.

    ``result`` holds what was reached (pass ``allow_unconverged=True`` to take it anyway)."""

    def __init__(self, message: str, result: object = None) -> None:
        self.result = result
        super().__init__(message)


def available_memory() -> int:
    """Bytes of memory available to a new allocation (Linux: MemAvailable; else physical memory)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.2f} GiB" if n_bytes >= 2**28 else f"{n_bytes / 2**20:.1f} MiB"


def check_memory(need: int, what: str, advice: str, have: int | None = None) -> None:
    """Raise :class:`ResourceError` when ``need`` bytes will not fit in the memory available now
    (``have``: the bytes available, when not the host's, e.g. a GPU's)."""
    have = available_memory() if have is None else have
    if need > 0.9 * have:
        raise ResourceError(f"{what} needs about {gib(need)}, but only {gib(have)} is available; {advice}")
