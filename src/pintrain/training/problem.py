"""Training as an evolution: w_{k+1} = w_k - lr * grad L_k(w_k), one SGD step per fine time step."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import OptionError, check_int, check_memory, check_positive
from .mlp import MLP
from .propagators import ALPHA_GROWTH, COARSE_PROPAGATORS
from .schedule import Schedule, check_steps, coarse_steps

if TYPE_CHECKING:
    from .paper import TraskNetwork

COARSE_OPTIONS = ("max_ratio", "sample", "alpha_growth", "alpha_max")


class TrainingProblem:
    """A :class:`pintrain.mgrit.Problem` whose fine step is one (S)GD step on step k's batch.

    ``L_k`` is the model's loss on the batch ``schedule.batch(k)``.  ``step(u, k, m)`` with m > 1
    is the coarse propagator named by ``coarse`` (see :mod:`pintrain.training.propagators`).
    ``step_many`` steps many weight vectors at once with one batched forward/backward pass.
    """

    def __init__(
        self,
        model: MLP | TraskNetwork,
        X: np.ndarray,
        Y: np.ndarray,
        schedule: Schedule,
        lr: float,
        n_steps: int,
        w0: np.ndarray,
        coarse: str = "union",
        coarse_options: dict[str, Any] | None = None,
        name: str = "training",
    ) -> None:
        check_int("steps", n_steps, 1)
        check_positive("lr", lr)
        if coarse not in COARSE_PROPAGATORS:
            raise OptionError("coarse", coarse, f"one of {', '.join(COARSE_PROPAGATORS)}")
        X = np.asarray(X, dtype=np.float64)
        Y = np.asarray(Y, dtype=np.float64)
        if Y.ndim == 1:
            Y = Y[:, None]
        if X.ndim != 2 or X.shape[1] != model.sizes[0] or Y.shape != (X.shape[0], model.sizes[-1]):
            raise OptionError(
                "data",
                f"X {X.shape}, Y {Y.shape}",
                f"X of shape (n, {model.sizes[0]}) and Y of shape (n, {model.sizes[-1]})",
            )
        if schedule.n_samples != X.shape[0]:
            raise OptionError("schedule.n_samples", schedule.n_samples, f"the number of samples, {X.shape[0]}")
        w0 = np.asarray(w0, dtype=np.float64).reshape(-1)
        if w0.size != model.n_params or not np.isfinite(w0).all():
            raise OptionError("w0", f"{w0.size} values", f"{model.n_params} finite values")
        self.model = model
        self.X, self.Y = X, Y
        self.schedule = schedule
        self.lr = float(lr)
        self.n_steps = int(n_steps)
        self.w0 = w0
        self.coarse = coarse
        self.coarse_options = dict(coarse_options or {})
        self._check_coarse_options()
        self.sample = self.coarse_options.get("sample")
        self.name = name
        if not schedule.full_batch:  # full batch: every step takes all samples, no table needed
            need = self.n_steps * schedule.batch_size * 8
            check_memory(need, f"the batch table of {n_steps} steps", "use fewer steps")
        self.table = np.empty((0, 0), dtype=np.int64) if schedule.full_batch else schedule.table(self.n_steps)
        self._coarse_fn = COARSE_PROPAGATORS[coarse]
        self._scale = model.loss_scale(schedule.batch_size)

    def _check_coarse_options(self) -> None:
        paper_rule = ALPHA_GROWTH.get(self.coarse) is not None
        for key, value in self.coarse_options.items():
            if key not in COARSE_OPTIONS:
                raise OptionError("coarse option", key, f"one of {', '.join(COARSE_OPTIONS)}")
            if key in ("alpha_growth", "alpha_max"):
                if not paper_rule or (key == "alpha_growth" and self.coarse == "naive"):
                    raise OptionError(
                        key,
                        value,
                        "given only with coarse 'solver1' or 'solver2' (alpha_max also with 'naive'); "
                        f"coarse {self.coarse!r} does not scale the learning rate by level",
                    )
                if value is None:
                    continue
                check_positive(key, value)
                if key == "alpha_growth" and value < 1:
                    raise OptionError(key, value, "a float >= 1 (the coarse learning rate grows with the spacing)")
                if key == "alpha_max" and value < self.lr:
                    raise OptionError(key, value, f"a float >= lr = {self.lr:g} (it caps the coarse learning rate)")
                continue
            if paper_rule and value is not None:
                raise OptionError(key, value, f"None: coarse {self.coarse!r} takes one step on fixed data")
            if value is not None or key == "max_ratio":
                check_int(key, value, 1)

    # -- the Problem protocol ----------------------------------------------------------------
    def initial(self) -> np.ndarray:
        return self.w0.copy()

    def step_many(self, U: np.ndarray, ks: np.ndarray, m: int) -> np.ndarray:
        ks = np.asarray(ks, dtype=np.int64)
        if m == 1:
            return U - self.lr * self.gradient_sum(U, ks, 1)
        return self._coarse_fn(self, U, ks, m)

    def step(self, u: np.ndarray, k: int, m: int) -> np.ndarray:
        return self.step_many(u[None, :], np.array([k]), m)[0]

    @property
    def divergence_hint(self) -> str:
        if ALPHA_GROWTH.get(self.coarse) is not None:
            return (
                f"coarse propagator {self.coarse!r} takes one step of a learning rate that grows with the level "
                f"(lr = {self.lr:g}, up to {self.coarse_lr(1 << 30):g}); cap it lower with alpha_max, use "
                "alpha_growth 1.25, the stable coarse propagator 'gauss-newton', fewer levels or a smaller cfactor"
            )
        if self.coarse == "gauss-newton":
            return (
                f"coarse propagator 'gauss-newton' linearises the loss over a level's spacing; at lr = {self.lr:g} "
                "MGRIT's iterates left the region where that linearisation holds: use fewer levels, a smaller "
                "cfactor, nested iteration (--nested) or a smaller lr"
            )
        return (
            f"coarse propagator {self.coarse!r} takes steps of m * lr on a level of spacing m "
            f"(lr = {self.lr:g}); use the stable coarse propagator 'gauss-newton', fewer levels, "
            "or a smaller cfactor"
        )

    def coarse_lr(self, m: int) -> float:
        """The learning rate of one coarse step of the paper's propagators on a level of spacing m:
        ``min(lr * growth**log2(m), alpha_max)``."""
        growth = self.coarse_options.get("alpha_growth") or ALPHA_GROWTH.get(self.coarse) or 1.0
        lr = self.lr * growth ** math.log2(m) if m > 1 else self.lr
        cap = self.coarse_options.get("alpha_max")
        return lr if cap is None else min(lr, float(cap))

    # -- pieces the propagators use ----------------------------------------------------------
    def union(self, ks: np.ndarray, m: int) -> tuple[np.ndarray, float]:
        """Sample indices of the batches that stand for steps ``ks[i] .. ks[i] + m - 1`` (all m, or
        the ``sample`` option's r of them, :func:`coarse_steps`): ``(len(ks), r * batch_size)``, and
        the weight of each batch's loss (1, or m / r)."""
        check_steps(ks, m, self.n_steps)
        steps, weight = coarse_steps(ks, m, self.sample)
        return self.table[steps].reshape(ks.size, -1), weight

    def _data(self, ks: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray, float]:
        """Inputs, targets and loss factor of the union of the batches of steps ``ks[i] .. ks[i] + m - 1``.

        Full-batch training sees the same samples at every step, so the union of m batches is the
        data set counted m times: one pass over it with the loss weighted by m, not m passes.
        """
        if self.schedule.full_batch:
            check_steps(ks, m, self.n_steps)
            return self.X, self.Y, m * self._scale
        idx, weight = self.union(ks, m)
        return self.X[idx], self.Y[idx], weight * self._scale

    def gradient_sum(self, W: np.ndarray, ks: np.ndarray, m: int) -> np.ndarray:
        """``sum_{j=k}^{k+m-1} grad L_j(w)`` for every row (the gradient over the union of the m batches;
        estimated from r of them, weighted m / r, with the ``sample=r`` coarse option)."""
        X, Y, scale = self._data(ks, m)
        return self.model.gradient(W, X, Y, scale)

    def gradient_all(self, W: np.ndarray, ks: np.ndarray, m: int) -> np.ndarray:
        """The gradient of one step's loss over the whole training set, for every row."""
        check_steps(ks, m, self.n_steps)
        return self.model.gradient(W, self.X, self.Y, self.model.loss_scale(self.X.shape[0]))

    def gradient_level(self, W: np.ndarray, ks: np.ndarray, m: int) -> np.ndarray:
        """The gradient of fine step ``i = k / m``'s loss on its own batch: a level's step i trains
        on the data of fine step i (Schroder's "serialized" data), whatever the spacing."""
        check_steps(ks, m, self.n_steps)
        if self.schedule.full_batch:
            return self.model.gradient(W, self.X, self.Y, self._scale)
        idx = self.table[np.asarray(ks, dtype=np.int64) // m]
        return self.model.gradient(W, self.X[idx], self.Y[idx], self._scale)

    def gauss_newton_sum(self, W: np.ndarray, ks: np.ndarray, m: int) -> np.ndarray:
        """The Gauss-Newton Hessian of the m step losses, ``scale * J^T J`` (B, P, P)."""
        X, _, scale = self._data(ks, m)
        return self.model.gauss_newton(W, X, scale)

    def linearization(self, W: np.ndarray, ks: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray, float]:
        """``(J, r, scale)`` over the union of the m batches: output residuals ``r`` (B, R), their
        Jacobian ``J`` (B, R, P); the gradient sum is ``scale * J^T r``, the Gauss-Newton Hessian
        ``scale * J^T J``."""
        X, Y, scale = self._data(ks, m)
        out, J = self.model.output_jacobian(W, X)
        return J, out - Y.reshape(-1 if Y.ndim == 2 else (Y.shape[0], -1)), scale

    # -- reporting ---------------------------------------------------------------------------
    def losses(self, states: np.ndarray, chunk: int = 1024) -> np.ndarray:
        """Loss on the whole training set (normalised as one step's loss) for every row of ``states``."""
        n = self.X.shape[0]
        scale = self.model.loss_scale(n)
        out = np.empty(states.shape[0])
        for start in range(0, states.shape[0], chunk):
            err = self.model.predict(states[start : start + chunk], self.X) - self.Y[None]
            out[start : start + chunk] = 0.5 * scale * np.sum(err * err, axis=(1, 2))
        return out

    def describe(self) -> dict[str, Any]:
        m = self.model
        return {
            "name": self.name,
            "network": {
                "sizes": list(m.sizes),
                "hidden": m.hidden,
                "output": m.output,
                "bias": m.bias,
                "loss": m.loss,
                "n_params": m.n_params,
            },
            "schedule": self.schedule.describe(),
            "lr": self.lr,
            "steps": self.n_steps,
            "coarse": self.coarse,
            "coarse_options": self.coarse_options,
        }
