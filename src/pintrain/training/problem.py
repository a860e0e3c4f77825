"""Training as an evolution: one training problem = model x schedule x optimizer x coarse propagator.

The fine step k is one optimizer step (:mod:`.optimizers`) on the batch ``schedule.batch(k)`` with
the gradient the model backend computes (:mod:`.model`: the numpy MLP, or a torch module through
:mod:`pintrain.torch`); a coarse step (spacing m > 1) is the propagator named by ``coarse``
(:mod:`.propagators`).  The same class serves every backend: the solver's numpy states are handed
to the backend's arrays at the boundary (zero-copy on the CPU).
"""

from __future__ import annotations

import math
import time
from typing import Any, cast

import numpy as np

from ..arrays import NUMPY
from ..errors import OptionError, check_int, check_memory, check_positive
from .model import Batches, HasHessian, HasLoneGradient, HasMetrics, HasSerialLoop, Linearizable, Model
from .optimizers import SGD, Optimizer
from .propagators import COARSE_PROPAGATORS, default_coarse
from .schedule import Schedule, check_steps, coarse_steps

# the curvature coarse step's table: the sharpest directions held, and the steps one entry serves
# (docs/convergence.md: rank 4-8 and blocks of 32-64 steps did what the whole Hessian did)
CURVATURE_RANK = 8
CURVATURE_BLOCK = 64

COARSE_OPTIONS = ("max_ratio", "sample", "alpha_growth", "alpha_max", "theta", "rank", "block")


class TrainingProblem:
    """A :class:`pintrain.mgrit.Problem`: ``model`` trained by ``optimizer`` for ``steps`` steps on
    the batches of ``schedule``, coarse steps by the propagator ``coarse``.

    Coarse options: ``max_ratio`` (``split``, ``lagged``: longest sub-interval, default 4), ``sample=r`` (a
    coarse gradient over m batches estimated from r of them, weighted m / r), ``alpha_growth`` and
    ``alpha_max`` (the paper's learning-rate rule of ``naive``/``solver1``/``solver2``), ``theta``
    (``gauss-newton``: the implicit weight of its step, default 1), ``rank`` and ``block``
    (``curvature``: the directions held, default 8, and the steps one table entry serves, default 64).
    ``coarse="auto"``: :func:`~pintrain.training.propagators.default_coarse` picks ``curvature`` or
    ``split`` from the optimizer and the model.

    ``lr_schedule``: the learning rate of every step, a sequence of ``steps`` rates or a function of
    the step (a pure function of k, so part of the evolution; :func:`pintrain.torch.lr_table` turns a
    ``torch.optim.lr_scheduler`` into one); ``lr`` of the optimizer is then unused by the steps.
    ``clip_grad_norm``: the gradient of every step scaled to at most this L2 norm, as
    ``torch.nn.utils.clip_grad_norm_`` (coarse steps clip their frozen mean gradient).
    """

    def __init__(
        self,
        model: Model,
        schedule: Schedule,
        optimizer: Optimizer,
        steps: int,
        coarse: str = "union",
        *,
        name: str = "training",
        lr_schedule: Any = None,
        clip_grad_norm: float | None = None,
        **coarse_options: Any,
    ) -> None:
        check_int("steps", steps, 1)
        self.lrs = None if lr_schedule is None else _lr_table(lr_schedule, int(steps))
        if clip_grad_norm is not None:
            check_positive("clip_grad_norm", clip_grad_norm)
        self.clip_grad_norm = None if clip_grad_norm is None else float(clip_grad_norm)
        if not isinstance(model, Model):
            raise OptionError("model", type(model).__name__, "a model backend (pintrain.training.Model)")
        if not isinstance(optimizer, Optimizer):
            raise OptionError("optimizer", optimizer, "an Optimizer (pintrain.training.make_optimizer)")
        hessian = isinstance(model, HasHessian)
        if coarse == "auto":
            coarse = default_coarse(optimizer, hessian, coarse_options.get("sample"))
        if coarse not in COARSE_PROPAGATORS:
            raise OptionError("coarse", coarse, f"'auto' or one of {', '.join(COARSE_PROPAGATORS)}")
        self.linearizable = isinstance(model, Linearizable)  # checked once: isinstance on a protocol is slow
        self._lone_path = isinstance(model, HasLoneGradient)
        self._lone = False  # inside step(): one row on its own (the coarsest level's sequential solve)
        self.compiled_update: Any = None  # the optimizer's update compiled (a torch problem with compile=True)
        self.lone_chain: Any = None  # the lone sub-interval in one function (the torch backend's)
        self.compiled_step: Any = None  # the fine step of many rows in one graph (compile=True; no clipping)
        self.compiled_sub_interval: Any = None  # a lagged/curvature sub-interval of many rows in one graph (the same)
        self._curvature: Any = None  # the curvature step's table, built on first use
        self.setup_s = 0.0  # seconds spent building it (a solve's time, wherever it was built)
        refusal = COARSE_PROPAGATORS[coarse].refusal(
            self.linearizable,
            optimizer,
            self.lrs is not None,
            self.clip_grad_norm is not None,
            hessian,
        )
        if refusal is not None:
            raise OptionError("coarse", coarse, f"a propagator this problem can run: {refusal}")
        if schedule.n_samples != model.n_samples:
            raise OptionError("schedule.n_samples", schedule.n_samples, f"the number of samples, {model.n_samples}")
        self.model = model
        self.ops = model.ops
        self.schedule = schedule
        self.optimizer = optimizer
        self.n_steps = int(steps)
        self.n_params = int(model.n_params)
        self.coarse = coarse
        self.name = name
        self.coarse_options = {k: v for k, v in coarse_options.items() if not (k == "max_ratio" and v is None)}
        self._check_coarse_options()
        self.max_ratio = int(self.coarse_options.get("max_ratio", 4))
        self.sample: int | None = self.coarse_options.get("sample")
        self.theta = float(self.coarse_options.get("theta") or 1.0)
        # a step's activations per row where the model can say (numpy networks), for the pass size
        sizer = getattr(model, "activation_bytes", None)
        batch = getattr(self.schedule, "batch_size", None)
        self._activation_bytes = int(sizer(batch)) if callable(sizer) and batch else 0
        if not schedule.full_batch:  # full batch: every step takes all samples, no table needed
            need = self.n_steps * schedule.batch_size * 8
            check_memory(need, f"the batch table of {steps} steps", "use fewer steps")
        self.table = np.empty((0, 0), dtype=np.int64) if schedule.full_batch else schedule.table(self.n_steps)
        self.u0 = np.ascontiguousarray(self.ops.to_numpy(optimizer.init(model.initial_weights(), self.ops)))
        if coarse == "curvature":
            self._curvature_shape()  # its table fits, checked before any work

    @property
    def lr(self) -> float:
        return self.optimizer.lr

    @property
    def any_spacing(self) -> bool:
        """Its coarse propagator is stable at any spacing, its iterations about flat across
        hierarchies: the cost model may choose the hierarchy (:func:`pintrain.mgrit.autotune.auto_layout`)."""
        return COARSE_PROPAGATORS[self.coarse].any_spacing

    def _check_coarse_options(self) -> None:
        paper_rule = COARSE_PROPAGATORS[self.coarse].alpha_growth is not None
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
            if key in ("rank", "block"):
                if self.coarse != "curvature":
                    raise OptionError(key, value, f"given only with coarse 'curvature', not {self.coarse!r}")
                if value is not None:
                    check_int(key, value, 1)
                continue
            if key == "theta":
                if self.coarse != "gauss-newton":
                    raise OptionError(key, value, f"given only with coarse 'gauss-newton', not {self.coarse!r}")
                if value is not None and (not isinstance(value, int | float) or not 0.5 <= value <= 1):
                    raise OptionError(key, value, "a float in [0.5, 1] (1: backward Euler, 0.5: trapezoidal)")
                continue
            if paper_rule and value is not None:
                raise OptionError(key, value, f"None: coarse {self.coarse!r} takes one step on fixed data")
            if key == "sample" and value is not None and not COARSE_PROPAGATORS[self.coarse].sampled:
                own = f"None: coarse {self.coarse!r} takes every step on its own batch (use 'split')"
                raise OptionError(key, value, own)
            if value is not None:
                check_int(key, value, 1, ", or None for all m batches" if key == "sample" else "")

    # -- the Problem protocol ----------------------------------------------------------------
    def initial(self) -> np.ndarray:
        return self.u0.copy()

    steps_into = True  # step_many writes into the solver's rows (out=): no new array per call

    def step_many(self, U: np.ndarray, ks: np.ndarray, m: int, out: Any = None) -> np.ndarray:
        ks = np.asarray(ks, dtype=np.int64).reshape(-1)
        if self.ops is NUMPY:  # numpy states need no conversion (a lone step of a small network is all overhead)
            return self._passes(U, ks, m, out)
        with self.ops.no_grad():
            if not isinstance(U, np.ndarray):  # the solver's levels hold the backend's arrays already
                return self._passes(U, ks, m, out)
            new = self.ops.to_numpy(self._passes(self.ops.asarray(U), ks, m))
            if out is None:
                return new
            out[...] = new
            return out

    def _passes(self, S: Any, ks: np.ndarray, m: int, out: Any = None) -> Any:
        """The step of every row, in passes of at most ``ops.pass_bytes`` of states (see
        :attr:`~pintrain.arrays.ArrayOps.pass_bytes`), written into one output (``out`` when given:
        rows of the solver's level array; a fresh array of the states' size costs its first touch,
        page by page, on every call)."""
        rows = max(2, self.ops.pass_bytes // max(1, S.shape[1] * S.dtype.itemsize + self._activation_bytes))
        n = S.shape[0] // rows  # near-equal passes of rows..2 rows: never a lone row (a model's cost per
        if n <= 1:  # row is worst for one row, and a row's rounding should not depend on its pass)
            return self._step(S, ks, m, out)
        if out is None:
            out = self.ops.empty(S.shape, S)
        cuts = [S.shape[0] * i // n for i in range(n + 1)]
        for a, b in zip(cuts, cuts[1:], strict=False):
            self._step(S[a:b], ks[a:b], m, out[a:b])
        return out

    def _step(self, S: Any, ks: np.ndarray, m: int, out: Any = None) -> Any:
        """The step of every row (into ``out`` when given: the fine step writes its parts there)."""
        if m > 1:
            new = COARSE_PROPAGATORS[self.coarse].fn(self, S, ks, m)
            if out is None:
                return new
            out[...] = new
            return out
        if self.compiled_step is not None and S.shape[0] >= self.compiled_step.min_rows:  # gradient and update
            return self.compiled_step(S, ks, out)
        W = S if S.shape[1] == self.n_params else S[:, : self.n_params]
        G = self._gradient(W, self.batches(ks, 1))
        if self.clip_grad_norm is not None:
            G = self.clip(G)
        return self.fine_update(S, G, ks, out)

    def fine_update(self, S: Any, G: Any, ks: np.ndarray, out: Any = None) -> Any:
        """The optimizer's step of every row with gradients ``G`` (compiled where the model is)."""
        if self.compiled_update is not None:
            return self.compiled_update.fine(S, G, ks, self.lrs, out)
        return self.optimizer.fine(S, G, ks, self.ops, self.lrs, out)

    def frozen_update(self, S: Any, G_sum: Any, ks: np.ndarray, m: int) -> Any:
        """The optimizer's m steps from ``ks`` with the gradient frozen at ``G_sum / m`` (the ``union``
        coarse step; compiled where the model is)."""
        if self.compiled_update is not None:
            return self.compiled_update.frozen(S, G_sum, ks, m, self.lrs)
        return self.optimizer.frozen(S, G_sum, ks, m, self.ops, self.lrs)

    def _curvature_shape(self) -> tuple[int, int]:
        """``(rank, block)`` of the curvature table, checked to fit in memory."""
        rank = min(int(self.coarse_options.get("rank") or CURVATURE_RANK), self.n_params)
        block = int(self.coarse_options.get("block") or CURVATURE_BLOCK)
        entries = -(-self.n_steps // block)
        check_memory(  # the entries, and the trajectory's state at each
            entries * (rank * self.n_params + self.u0.size) * self.u0.itemsize,
            f"the curvature table ({entries} entries of {rank} directions)",
            "give coarse_options a smaller rank or a longer block, or use coarse='lagged' or 'split'",
        )
        return rank, block

    def curvature_zeros(self, like: Any) -> tuple[Any, Any, int]:
        """A table of zeros of this problem's shape, stacked as :attr:`CurvatureTable.stacked
        <pintrain.training.curvature.CurvatureTable.stacked>`: what a compiled step's trial call
        takes before the table is built."""
        rank, block = self._curvature_shape()
        entries = -(-self.n_steps // block)
        return self.ops.zeros((entries, rank, self.n_params), like), self.ops.zeros((entries, rank), like), block

    def prepare(self) -> None:
        """Build now what the coarse propagator builds on first use (the ``curvature`` table), so
        that a timing of the steps (the cost model's) does not count it; its seconds stay in
        ``setup_s``, which :func:`pintrain.train` adds to the solve's time."""
        if self.coarse == "curvature":
            self._curvature_table()

    def _curvature_table(self) -> Any:
        """The ``curvature`` step's table, built on the first call (coarse options ``rank``, default
        ``CURVATURE_RANK``, and ``block``, default ``CURVATURE_BLOCK`` steps an entry)."""
        if self._curvature is None:
            from .curvature import build

            # the trajectory is one row: the lone path, whichever call (lone or batched) builds the table
            lone, self._lone = self._lone, self._lone_path
            t0 = time.perf_counter()
            try:
                self._curvature = build(self, *self._curvature_shape())
            finally:
                self._lone = lone
                self.setup_s += time.perf_counter() - t0
        return self._curvature

    def trajectory_guess(self) -> tuple[int, Any] | None:
        """``(s, X)``: states at steps 0, s, 2s, ... that the coarse propagator computed already (the
        ``curvature`` table's trajectory, s its block), for the solver's nested start
        (:class:`~pintrain.mgrit.problem.Guessed`); None for the other propagators."""
        if self.coarse != "curvature":
            return None
        table = self._curvature_table()
        return table.block, table.trajectory

    def curvature_term(self, dW: Any, ks: np.ndarray) -> Any:
        """The ``curvature`` coarse step's ``H_r (w - w0)`` (:mod:`pintrain.training.curvature`)."""
        table = self._curvature_table()
        if self._lone and dW.shape[0] == 1:  # the coarsest chain (a path, not a row count)
            return table.term_lone(dW, int(np.asarray(ks).reshape(-1)[0]))[None]
        return table.term(dW, ks)

    def lone_steps(self, S: Any, ks: np.ndarray, m: int, curved: bool) -> Any | None:
        """A ``lagged`` / ``curvature`` coarse step of m steps of one row on the lone path, by the
        model backend's own function (:class:`pintrain.torch.chain.LoneSubInterval`: eager, the
        propagator's own operations with less between them; ``compile=True``, a graph for up to 4
        sub-intervals; made only without gradient clipping), or None: the propagator's own steps."""
        if self.lone_chain is None or not self._lone or S.shape[0] != 1:  # (no chain is made with clipping)
            return None
        return self.lone_chain(S, ks, m, curved)

    def fused_sub_interval(self, S: Any, ks: np.ndarray, r: int, curved: bool) -> Any | None:
        """A ``lagged`` / ``curvature`` sub-interval of r steps of many rows in one compiled graph
        (:class:`pintrain.torch.update.CompiledSubInterval`: ``compile=True``, no clipping, at least
        its ``min_rows`` rows), or None: the propagator's own steps."""
        fused = self.compiled_sub_interval
        if fused is None or S.shape[0] < fused.min_rows:
            return None
        return fused(S, ks, r, curved)

    def clip(self, G: Any) -> Any:
        """Each row of ``G`` scaled as ``torch.nn.utils.clip_grad_norm_(max_norm)`` would: by
        ``min(1, max_norm / (|g| + 1e-6))`` (unchanged without clipping)."""
        if self.clip_grad_norm is None:
            return G
        norms = np.asarray(self.ops.to_numpy((G * G).sum(1) ** 0.5), dtype=np.float64)
        coef = np.minimum(self.clip_grad_norm / (norms + 1e-6), 1.0)
        return G * self.ops.column(coef, G)

    def step(self, u: Any, k: int, m: int) -> Any:
        """One state on its own (the solver's sequential coarsest solve): a model's lone-row path
        (:class:`~pintrain.training.model.HasLoneGradient`) is taken here and only here."""
        self._lone = self._lone_path
        try:
            return self.step_many(u[None, :], np.array([k]), m)[0]
        finally:
            self._lone = False

    def _gradient(self, W: Any, batches: Batches) -> Any:
        if self._lone and W.shape[0] == 1:
            return cast(HasLoneGradient, self.model).gradient_lone(W, batches)
        return self.model.gradient(W, batches)

    @property
    def divergence_hint(self) -> str:
        if COARSE_PROPAGATORS[self.coarse].alpha_growth is not None:
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
        gauss = COARSE_PROPAGATORS["gauss-newton"].refusal(self.linearizable, self.optimizer)
        if gauss is None:
            stable = "the stable coarse propagator 'gauss-newton'"
        elif COARSE_PROPAGATORS[self.coarse].sub_intervals:
            stable = f"a smaller max_ratio than {self.max_ratio}"
        else:
            stable = f"coarse='split' (max_ratio={self.max_ratio})"
        return (
            f"coarse propagator {self.coarse!r} takes steps of about m * lr on a level of spacing m "
            f"(lr = {self.lr:g}); use {stable}, fewer levels, a smaller cfactor or a smaller lr"
        )

    def coarse_lr(self, m: int) -> float:
        """The learning rate of one coarse step of the paper's propagators on a level of spacing m:
        ``min(lr * growth**log2(m), alpha_max)``."""
        growth = self.coarse_options.get("alpha_growth") or COARSE_PROPAGATORS[self.coarse].alpha_growth or 1.0
        lr = self.lr * growth ** math.log2(m) if m > 1 else self.lr
        cap = self.coarse_options.get("alpha_max")
        return lr if cap is None else min(lr, float(cap))

    # -- the batches behind a step -----------------------------------------------------------
    def batches(self, ks: np.ndarray, m: int) -> Batches:
        """The batches that stand for steps ``ks[i] .. ks[i] + m - 1``: all m, or the ``sample`` option's
        r of them (:func:`coarse_steps`), each weighted 1 or m / r.  Full-batch training sees the same
        samples at every step, so the union of m batches is the data set with weight m (one pass)."""
        if self.schedule.full_batch:
            check_steps(ks, m, self.n_steps)
            return Batches(None, 1, float(m))
        ks = np.asarray(ks, dtype=np.int64).reshape(-1)
        check_steps(ks, m, self.n_steps)
        steps, weight = coarse_steps(ks, m, self.sample)
        return Batches(self.table[steps].reshape(ks.size, -1), steps.shape[1], weight)

    def gradient_sum(self, W: Any, ks: np.ndarray, m: int) -> Any:
        """``sum_{j=k}^{k+m-1} grad L_j(w)`` for every row (the gradient over the union of the m batches;
        estimated from r of them, weighted m / r, with the ``sample=r`` coarse option)."""
        return self._gradient(W, self.batches(ks, m))

    def gradient_steps(self, W: Any, ks: np.ndarray, r: int) -> Any:
        """``grad L_{k+j}(w)`` for j < r, each step's own batch, at every row's weights: (B, r, P).
        One batched call of B r rows; a lone row (the coarsest chain) takes the model's lone path
        once per step instead (vmap's fixed cost is most of a call of r rows of one small network:
        the digits MLP's lone ``curvature`` chain went from about 2 ms a sub-interval to 0.6)."""
        ks = np.asarray(ks, dtype=np.int64).reshape(-1)
        if self._lone and W.shape[0] == 1:
            return self.ops.concat_rows([self._gradient(W, self.batches(ks + j, 1)) for j in range(r)])[None]
        rows = np.repeat(np.arange(W.shape[0]), r)
        steps = (ks[:, None] + np.arange(r)[None, :]).reshape(-1)
        return self._gradient(W[self.ops.index(rows)], self.batches(steps, 1)).reshape(W.shape[0], r, -1)

    def gradient_all(self, W: Any, ks: np.ndarray, m: int) -> Any:
        """The gradient of one step's loss over the whole training set, for every row."""
        check_steps(np.asarray(ks), m, self.n_steps)
        return self._gradient(W, Batches(None))

    def gradient_level(self, W: Any, ks: np.ndarray, m: int) -> Any:
        """The gradient of fine step ``i = k / m``'s loss on its own batch: a level's step i trains
        on the data of fine step i (Schroder's "serialized" data), whatever the spacing."""
        ks = np.asarray(ks, dtype=np.int64).reshape(-1)
        check_steps(ks, m, self.n_steps)
        if self.schedule.full_batch:
            return self._gradient(W, Batches(None))
        return self._gradient(W, Batches(self.table[ks // m]))

    def linearization(self, W: np.ndarray, ks: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray, float]:
        """``(J, r, scale)`` over the union of the m batches (:class:`~pintrain.training.model.Linearizable`)."""
        if not self.linearizable:
            raise OptionError("coarse", self.coarse, "a propagator that does not need the model's Jacobian")
        return cast(Linearizable, self.model).linearization(W, self.batches(ks, m))

    # -- reference and reporting ---------------------------------------------------------------
    def serial_states(self) -> np.ndarray:
        """Serial training, every step's state as a row: the model framework's own loop where it has one
        (torch: ``loss.backward(); opt.step()``), else the loop of fine steps."""
        return self.serial_run("all")[1]

    @property
    def batch_table(self) -> np.ndarray | None:
        """Step k's sample indices as row k (None for full-batch training: every step takes all)."""
        return None if self.schedule.full_batch else self.table

    def kept_points(self, keep: Any) -> np.ndarray:
        """The fine points whose states a run keeps: ``"all"`` (0 .. N), ``"final"`` (0 and N), or an
        int K (every K-th point, and N): checkpoints."""
        n = self.n_steps
        if keep == "all":
            return np.arange(n + 1)
        if keep == "final":
            return np.array([0, n])
        check_int("keep", keep, 1, ' (every K-th state), or "all" or "final"')
        return np.unique(np.append(np.arange(0, n + 1, int(keep)), n))

    def serial_run(self, keep: Any = "all") -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Serial training, keeping only the states of :meth:`kept_points` (memory independent of N
        with ``keep="final"``): ``(points, states, step_losses)``, the batch losses as the loop saw
        them (the framework's loop), or None (the loop of fine steps, which computes no loss)."""
        points = self.kept_points(keep)
        if isinstance(self.model, HasSerialLoop):
            states, losses = self.model.serial_run(
                self.optimizer, self.batch_table, self.n_steps, self.lrs, self.clip_grad_norm, points
            )
            return points, states, losses
        u = self.initial()
        out = np.empty((points.size, u.size), dtype=u.dtype)
        row = 0
        if points[0] == 0:
            out[0], row = u, 1
        for k in range(self.n_steps):
            u = self.step(u, k, 1)
            if row < points.size and points[row] == k + 1:
                out[row] = u
                row += 1
        return points, out, None

    def weights(self, states: np.ndarray) -> np.ndarray:
        """The weights part of a state (or of rows of states)."""
        return states[..., : self.n_params]

    def losses(self, states: np.ndarray, chunk: int = 256) -> np.ndarray:
        """The loss over the whole training set (normalised as one step's loss) at every row of ``states``."""
        out = np.empty(states.shape[0])
        with self.ops.no_grad():
            for start in range(0, states.shape[0], chunk):
                W = self.ops.asarray(np.ascontiguousarray(self.weights(states[start : start + chunk])))
                out[start : start + chunk] = self.ops.to_numpy(self.model.loss(W, Batches(None)))
        return out

    def step_losses(self, states: np.ndarray, chunk: int = 256) -> np.ndarray:
        """``L_k(w_k)``: the loss of step k's batch at the weights before step k, k = 0 .. len - 2
        (what a training loop logs)."""
        n = min(states.shape[0] - 1, self.n_steps)
        out = np.empty(n)
        with self.ops.no_grad():
            for start in range(0, n, chunk):
                ks = np.arange(start, min(n, start + chunk))
                W = self.ops.asarray(np.ascontiguousarray(self.weights(states[start : start + ks.size])))
                out[start : start + ks.size] = self.ops.to_numpy(self.model.loss(W, self.batches(ks, 1)))
        return out

    def metrics(self, state: np.ndarray) -> dict[str, float]:
        """The model's figures of merit (accuracy, ...) at ``state``; empty if it has none."""
        if not isinstance(self.model, HasMetrics):
            return {}
        return self.model.metrics(self.ops.asarray(np.ascontiguousarray(self.weights(state))))

    def describe(self) -> dict[str, Any]:
        opt = self.optimizer
        return {
            "name": self.name,
            "model": self.model.describe(),
            "optimizer": {"name": opt.name, "lr": opt.lr, **opt.hyper},
            "state_size": int(self.u0.size),
            "schedule": self.schedule.describe(),
            "lr": opt.lr,
            "steps": self.n_steps,
            "coarse": self.coarse,
            "coarse_options": dict(self.coarse_options),
            "lr_schedule": None if self.lrs is None else {"first": self.lrs[0], "last": self.lrs[-1]},
            "clip_grad_norm": self.clip_grad_norm,
        }

    def summary(self) -> str:
        """One line: the problem, the model, the data, the optimizer and the coarse propagator."""
        d = self.describe()
        sched, opt = d["schedule"], self.optimizer
        if sched["full_batch"]:
            data = "full-batch"
        elif sched["batch_size"] == 1 and not sched["shuffle"]:
            data = f"one example per step, in order ({sched['n_samples']} examples)"
        else:
            data = f"batch {sched['batch_size']} of {sched['n_samples']}"
        if type(opt) is SGD and not opt.weight_decay:
            train = "full-batch GD" if data == "full-batch" else ("GD on " if "example" in data else "SGD, ") + data
            train += f", lr {opt.lr:g}"
        else:
            hyper = "".join(f", {k} {v}" for k, v in opt.hyper.items() if k not in ("nesterov", "decoupled"))
            train = f"{opt.name} ({data}, lr {opt.lr:g}{hyper})"
        extra = ", ".join(
            f"{k} {v:g}"
            for k, v in self.coarse_options.items()
            if v is not None and (k != "max_ratio" or COARSE_PROPAGATORS[self.coarse].sub_intervals)
        )
        return (
            f"{self.name} ({d['model']['summary']}), {self.n_steps} steps of {train}, "
            f"coarse propagator {self.coarse!r}{f' ({extra})' if extra else ''}"
        )


def _lr_table(schedule: Any, n_steps: int) -> np.ndarray:
    """The learning rate of steps 0 .. n_steps - 1 from a sequence or a function of the step."""
    try:
        if callable(schedule):
            table = np.array([float(schedule(k)) for k in range(n_steps)], dtype=np.float64)
        else:
            table = np.asarray(schedule, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise OptionError(
            "lr_schedule",
            type(schedule).__name__,
            f"a sequence of {n_steps} learning rates or a function k -> lr ({err})",
        ) from None
    if table.shape != (n_steps,):
        raise OptionError("lr_schedule", f"{table.size} rates", f"one learning rate per step, {n_steps} of them")
    if not (np.isfinite(table).all() and (table >= 0).all()):
        raise OptionError("lr_schedule", "rates with NaN/inf or < 0", "finite learning rates >= 0")
    return table
