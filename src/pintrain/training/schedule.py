"""The data schedule: which samples training step k sees, a pure function of (seed, k)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..errors import OptionError, check_int


class Schedule:
    """Mini-batches of ``batch_size`` samples from ``n_samples``, reshuffled each epoch from the seed.

    Step k belongs to epoch ``k // steps_per_epoch`` and takes batch ``k % steps_per_epoch`` of that
    epoch's permutation (``numpy.random.default_rng((seed, epoch))``), so any process can compute
    any step's batch without communication, in any order.  An epoch has
    ``n_samples // batch_size`` steps (the remainder is dropped, so every batch has the same size, as
    a ``DataLoader(..., drop_last=True)``; :class:`GivenBatches` takes any order of equal batches).
    ``batch_size=None`` (or >= n_samples) is full-batch training: every step sees every sample,
    in the original order.  ``shuffle=False`` keeps the original order in every epoch, and
    ``offset`` shifts the whole sequence: step k takes what step ``k + offset`` would (with batch
    size 1, no shuffling and offset 1, step k trains on sample ``(k + 1) mod n_samples``: the
    "serialized" data of Schroder 2017, whose training runs are numbered from 1).
    """

    def __init__(
        self,
        n_samples: int,
        batch_size: int | None = None,
        seed: int = 0,
        shuffle: bool = True,
        offset: int = 0,
    ) -> None:
        check_int("n_samples", n_samples, 1)
        if batch_size is not None:
            check_int("batch_size", batch_size, 1, ", or None for full batch")
        check_int("seed", seed, 0)
        check_int("offset", offset, 0)
        if batch_size is not None and batch_size > n_samples:
            raise OptionError(
                "batch_size", batch_size, f"at most the number of samples, {n_samples} (or None for full batch)"
            )
        self.n_samples = int(n_samples)
        self.full_batch = batch_size is None or batch_size >= n_samples
        self.batch_size = self.n_samples if batch_size is None or self.full_batch else int(batch_size)
        self.steps_per_epoch = self.n_samples // self.batch_size
        self.seed = int(seed)
        self.shuffle = bool(shuffle) and not self.full_batch
        self.offset = 0 if self.full_batch else int(offset)
        self._perm = lru_cache(maxsize=64)(self._permutation)

    def _permutation(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.n_samples)
        return np.random.default_rng((self.seed, epoch)).permutation(self.n_samples)

    def batch(self, k: int) -> np.ndarray:
        """Sample indices of step ``k`` (a 1-D array of ``batch_size`` ints)."""
        if k < 0:
            raise IndexError(f"step {k} is negative")
        epoch, b = divmod(int(k) + self.offset, self.steps_per_epoch)
        return self._perm(epoch)[b * self.batch_size : (b + 1) * self.batch_size]

    def batches(self, ks: np.ndarray, m: int = 1) -> np.ndarray:
        """Indices of steps ``ks[i] .. ks[i] + m - 1`` for every i: shape ``(len(ks), m * batch_size)``."""
        ks = np.asarray(ks, dtype=np.int64).reshape(-1)
        if self.full_batch:
            return np.broadcast_to(np.tile(np.arange(self.n_samples), m), (ks.size, m * self.batch_size))
        steps = ks[:, None] + np.arange(m)[None, :] + self.offset
        out = np.empty((ks.size, m, self.batch_size), dtype=np.int64)
        epochs, pos = np.divmod(steps, self.steps_per_epoch)
        for epoch in np.unique(epochs):
            sel = epochs == epoch
            perm = self._perm(int(epoch)).reshape(-1)[: self.steps_per_epoch * self.batch_size]
            out[sel] = perm.reshape(self.steps_per_epoch, self.batch_size)[pos[sel]]
        return out.reshape(ks.size, m * self.batch_size)

    def table(self, n_steps: int) -> np.ndarray:
        """Batches of steps ``0 .. n_steps - 1`` as one ``(n_steps, batch_size)`` array (row k = step k)."""
        n_epochs = -(-(int(n_steps) + self.offset) // self.steps_per_epoch)
        used = self.steps_per_epoch * self.batch_size
        rows = [self._permutation(e)[:used].reshape(self.steps_per_epoch, self.batch_size) for e in range(n_epochs)]
        if not rows:
            return np.empty((0, self.batch_size), dtype=np.int64)
        return np.concatenate(rows)[self.offset : self.offset + n_steps].astype(np.int64)

    def describe(self) -> dict:
        return {
            "n_samples": self.n_samples,
            "batch_size": self.batch_size,
            "full_batch": self.full_batch,
            "steps_per_epoch": self.steps_per_epoch,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "offset": self.offset,
            "dropped_per_epoch": self.n_samples - self.steps_per_epoch * self.batch_size,
        }


class GivenBatches(Schedule):
    """The user's own batch order: row k of ``batches`` (steps x batch size, sample indices) is the
    batch of step k, e.g. the index lists a ``DataLoader``'s sampler yields, written down once so
    that every step's data is fixed in advance.  All batches must have the same size."""

    def __init__(self, n_samples: int, batches: object) -> None:
        check_int("n_samples", n_samples, 1)
        try:
            rows = [np.asarray(b, dtype=np.int64).reshape(-1) for b in batches]  # type: ignore[attr-defined]
        except (TypeError, ValueError):
            raise OptionError("batches", type(batches).__name__, "a sequence of index batches, one per step") from None
        sizes = {r.size for r in rows}
        if not rows or len(sizes) != 1 or 0 in sizes:
            raise OptionError(
                "batches",
                f"{len(rows)} batches of sizes {sorted(sizes)[:4]}",
                "one or more batches, all of the same size > 0 (drop the last, smaller one)",
            )
        order = np.stack(rows)
        if order.min() < 0 or order.max() >= n_samples:
            raise OptionError("batches", "indices out of range", f"sample indices in 0 .. {n_samples - 1}")
        self.n_samples = int(n_samples)
        self.full_batch = False
        self.batch_size = int(order.shape[1])
        self.steps_per_epoch = int(order.shape[0])
        self.seed, self.shuffle, self.offset = 0, False, 0
        self.order = order

    def _need(self, last: int) -> None:
        if last >= self.order.shape[0]:
            raise OptionError("batches", f"{self.order.shape[0]} batches", f"one batch per step, {last + 1} at least")

    def batch(self, k: int) -> np.ndarray:
        if k < 0:
            raise IndexError(f"step {k} is negative")
        self._need(int(k))
        return self.order[int(k)]

    def batches(self, ks: np.ndarray, m: int = 1) -> np.ndarray:
        ks = np.asarray(ks, dtype=np.int64).reshape(-1)
        steps = ks[:, None] + np.arange(m)[None, :]
        self._need(int(steps.max(initial=0)))
        return self.order[steps].reshape(ks.size, m * self.batch_size)

    def table(self, n_steps: int) -> np.ndarray:
        self._need(int(n_steps) - 1)
        return self.order[:n_steps].copy()

    def describe(self) -> dict:
        return {
            "n_samples": self.n_samples,
            "batch_size": self.batch_size,
            "full_batch": False,
            "given": True,
            "steps_given": int(self.order.shape[0]),
            "shuffle": False,
        }


def check_steps(ks: np.ndarray, m: int, n_steps: int) -> None:
    """Raise ``IndexError`` if a span of m steps from a start in ``ks`` runs past step ``n_steps - 1``."""
    last = int(np.max(ks)) + m - 1 if np.size(ks) else -1
    if last >= n_steps:
        raise IndexError(f"step {last} is past the last training step {n_steps - 1}")


def coarse_steps(ks: np.ndarray, m: int, sample: int | None = None) -> tuple[np.ndarray, float]:
    """The steps whose batches stand for the m steps from each start in ``ks``, and their weight.

    All m steps (weight 1), or with ``sample=r < m`` only r of them, spread evenly over the
    interval (steps ``k + floor(i m / r)``, i < r), each weighted ``m / r`` so that the sum of their
    gradients estimates the sum over all m.  Shape ``(len(ks), min(m, r))``.
    """
    r = m if sample is None else min(m, int(sample))
    offsets = (np.arange(r, dtype=np.int64) * m) // r
    return np.asarray(ks, dtype=np.int64)[:, None] + offsets[None, :], m / r
