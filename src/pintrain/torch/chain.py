"""The coarsest level's lone coarse steps in one function, eager or compiled (``compile=True``).

The coarsest level's solve, and the ``curvature`` table's coarse trajectory, are chains of lone
sub-intervals: for ``lagged`` and ``curvature``, the r gradients of the sub-interval's batches at
its start's weights, then the optimizer's r steps (``curvature``: each with the term ``H_r (w_j -
w0)`` of :mod:`pintrain.training.curvature`).  Through the propagator's own steps that is a few
dozen small operations and the layers of calls between them; for the digits MLP with Adam in
float32 (one thread) a sub-interval of two steps took 910-920 us, more than two steps of the torch
loop (390-410 us each), so the chain, N / 2 sub-intervals an iteration, cost more than the serial
loop every iteration.  :class:`LoneSubInterval` takes a whole coarse step (the propagators ask
``problem.lone_steps`` first).  Eager, it runs the same operations bit for bit with less between
them (the module's weights set once for the r gradients, the steps' batch indices and coefficients
read from tables made once on the device): about 700 us a sub-interval.  Compiled, up to ``CHUNK``
sub-intervals are one graph (``fullgraph=True``: the gradients, the terms and the updates, the
batch gather included): 71-75 us a sub-interval on a CPU, where the graph's kernels are called
from C++ (:data:`CPP_WRAPPER`), a sub-interval's r gradients are one vmap and a call checks only its
tensors' guards (130-140 us before session 11; docs/performance.md).  On a CUDA device the
compiled graph is replayed as a CUDA graph (``mode="reduce-overhead"``), one launch instead of a
launch per kernel: on an H200, 245 us a sub-interval against 710 compiled without and 2230 eager,
where a step of the torch loop took 1200.

Compiled, the arithmetic is still the library's own (the model's step loss, the optimizer's
``fine_apply``, the table's term), so the answer equals the eager chain's to rounding, not bit for
bit, as everything ``compile=True`` runs.  The lone path is a path, not a row count (a row stepped
in a batch takes the batched gradients).  One graph per chunk of sub-interval lengths and per
variant (with or without the term); the shapes are fixed, so each is compiled once.  Gradient
clipping takes the propagator's own steps.
"""

from __future__ import annotations

import types
from typing import Any

import numpy as np
import torch
from torch.func import grad, vmap

from ..training.curvature import lone_term
from ..training.propagators import _lengths, lagged_updates
from ..training.schedule import check_steps

CUDA_GRAPHS = True
"""Whether the compiled chain on a CUDA device is replayed as CUDA graphs by default
(``torch.compile``'s ``mode="reduce-overhead"``); ``benchmarks/device.py --no-cuda-graphs`` turns it off."""


CPP_WRAPPER = True
"""Whether the compiled chain on a CPU calls its kernels from C++ (inductor's ``cpp_wrapper``): the
graph of a few hundred tiny kernels and matrix products spent most of its time in the Python code that
calls them.  The digits MLP with Adam in float32, one thread: 140 -> 101 us a sub-interval, and 93
with the r gradients as one vmap (docs/performance.md, session 11)."""


CHUNK = 4
"""Sub-intervals a compiled call takes at most (a graph for each chunk of lengths met).  A chunk
cuts the calls' own cost (the guards and the call, about 140 us of a compiled sub-interval on this
CPU): the digits MLP with Adam in float32, coarse steps of 16, 266 us a sub-interval at one a call,
188 at 2, 139 at 4, 129 at 8; compiling grows with the chunk (a cold ``compile=True`` problem 46 s
at one, 70 s at 4, 108 s at 8), so 4.  (With the C++ wrapper and the gradients as one vmap, 121 us
at 2, 91-101 at 4, 113-143 at 8; a cold build 54 s at 4.)"""


class LoneSubInterval:
    """``lagged`` / ``curvature`` coarse steps of one row (a (1, state size) tensor): eager
    (``compiled=False``), a sub-interval at a time, the same operations as the propagator's steps,
    bit for bit, with the r gradients from one setting of the lone module's weights; compiled,
    chunks of up to ``chunk`` sub-intervals as one graph each (``graphs``: replayed as CUDA graphs,
    by default on a CUDA device)."""

    def __init__(self, problem: Any, compiled: bool = False, graphs: bool | None = None) -> None:
        self.problem, self.compiled = problem, compiled
        # on a GPU the compiled chunks are replayed as CUDA graphs (one launch for a chunk's kernels)
        if graphs is None:
            graphs = CUDA_GRAPHS and compiled and problem.device.type == "cuda"
        self.graphs = graphs
        if self.graphs and not compiled:
            raise ValueError("CUDA graphs replay the compiled sub-interval: graphs=True needs compiled=True")
        self._fn: Any = self._chunk
        self.cpp_wrapper = False  # whether the compiled graphs call their kernels from C++
        if self.graphs:
            self._fn = torch.compile(self._chunk, dynamic=False, fullgraph=True, mode="reduce-overhead")
        elif compiled:  # on a CPU the graph's kernels called from C++, not from Python (CPP_WRAPPER)
            self.cpp_wrapper = CPP_WRAPPER and problem.device.type == "cpu"
        self._fns: dict[tuple[tuple[int, ...], bool, bool], Any] = {}  # a compiled function per variant
        self.chunk = CHUNK  # sub-intervals a compiled call takes at most
        self._steps: tuple[torch.Tensor | None, tuple[Any, ...]] | None = None
        self._table: tuple[torch.Tensor, torch.Tensor, int] | None = None
        self._entry_of: tuple[int, torch.Tensor] | None = None

    def _compiled(self) -> Any:
        """A compiled function for one variant of the chunk (its lengths, with or without the term,
        with or without batch indices), which checks only its tensors' guards when called
        (``keep_tensor_guards_unsafe``): the guards on everything else a call reads (the problem,
        the optimizer's hyper-parameters, the module's structure, the lengths, which arguments are
        None) cost 130 us a call of 4 sub-intervals, and none of it changes for a problem's chain
        except what the variant fixes (docs/performance.md, session 11)."""
        options: dict[str, Any] = {"guard_filter_fn": torch.compiler.keep_tensor_guards_unsafe}
        if self.cpp_wrapper:
            options["cpp_wrapper"] = True
        # dynamo keeps its compiled code per code object: each variant gets a code object of its own,
        # so that one variant's graph, whose guards no longer tell the variants apart, serves no other
        own = LoneSubInterval._chunk
        code = types.FunctionType(own.__code__.replace(), own.__globals__, own.__name__, own.__defaults__)
        return torch.compile(types.MethodType(code, self), dynamic=False, fullgraph=True, options=options)

    def _function(self, lengths: tuple[int, ...], curved: bool, batched: bool) -> Any:
        """The chunk's function: eager, or CUDA graphs, one for all; compiled, one per variant."""
        if not self.compiled or self.graphs:
            return self._fn
        key = (lengths, curved, batched)
        if key not in self._fns:
            self._fns[key] = self._compiled()
        return self._fns[key]

    def _gradients(
        self, w0: torch.Tensor, r: int, ix: torch.Tensor | None, X: torch.Tensor, y: torch.Tensor
    ) -> list[Any]:
        """The r step losses' gradients at ``w0``, each a (P,) tensor."""
        model = self.problem.model
        if self.compiled:  # the r batches' gradients in one set of kernels (a vmap over the batches)
            loss_grad = grad(model._loss_one)
            if ix is None:
                return [loss_grad(w0, X, y)] * r
            G = vmap(loss_grad, in_dims=(None, 0, 0))(w0, X[ix], y[ix])
            return [G[j] for j in range(r)]
        return model.lone_gradients(w0, [(X, y) if ix is None else (X[ix[j]], y[ix[j]]) for j in range(r)])

    def _sub_interval(
        self,
        u: torch.Tensor,
        r: int,
        ix: torch.Tensor | None,
        X: torch.Tensor,
        y: torch.Tensor,
        coefficients: tuple[Any, ...],
        Bt: torch.Tensor | None,
        s: torch.Tensor | None,
    ) -> torch.Tensor:
        problem = self.problem
        optimizer, P = problem.optimizer, problem.n_params
        G = self._gradients(u[:P], r, ix, X, y)

        def update(S: torch.Tensor, g: torch.Tensor, j: int) -> torch.Tensor:
            c = tuple(x[j : j + 1] if isinstance(x, torch.Tensor) else x for x in coefficients)
            return optimizer.fine_apply(S, g, c, problem.ops)

        term = None if Bt is None or s is None else (lambda dW: lone_term(dW[0], Bt, s)[None])
        return lagged_updates(u[None], P, r, lambda j: G[j][None], update, term)

    def _chunk(
        self,
        u: torch.Tensor,
        lengths: tuple[int, ...],
        ix: torch.Tensor | None,
        X: torch.Tensor,
        y: torch.Tensor,
        coefficients: tuple[Any, ...],
        Bt: torch.Tensor | None,
        s: torch.Tensor | None,
        entries: torch.Tensor | None,
    ) -> torch.Tensor:
        """Sub-intervals of ``lengths`` one after the other (a call's unit, compiled or eager): ``ix``
        and the coefficient columns cover all their steps, ``entries`` holds each sub-interval's
        entry of the stacked table ``Bt`` / ``s`` (None: no term)."""
        if Bt is not None and s is not None and entries is not None:
            Bt, s = Bt.index_select(0, entries), s.index_select(0, entries)
        S, off = u[None], 0
        for i, r in enumerate(lengths):
            c = tuple(x[off : off + r] if isinstance(x, torch.Tensor) else x for x in coefficients)
            sub = None if ix is None else ix[off : off + r]
            term = (None, None) if Bt is None or s is None else (Bt[i], s[i])
            S = self._sub_interval(S[0], r, sub, X, y, c, *term)
            off += r
        return S

    def __call__(self, S: torch.Tensor, ks: np.ndarray, m: int, curved: bool) -> torch.Tensor:
        """The m steps from ``ks`` (one step index) of the one row ``S``: sub-intervals of
        ``_lengths(m, max_ratio)``, as ``sub_intervals`` takes them.  Eager, one call a sub-interval;
        compiled, up to ``CHUNK`` equal sub-intervals a call (a coarse step of 16 steps, 8
        sub-intervals of 2, is two calls of one graph)."""
        k = int(np.asarray(ks).reshape(-1)[0])
        check_steps(np.array([k]), m, self.problem.n_steps)
        return self._steps_from(S, k, m, self._term_table() if curved else None)

    def trial(self, S: torch.Tensor, m: int, curved: bool) -> None:
        """The m steps from step 0 without the term and (``curved``) with a zero table: compiles
        their graphs before a solve needs them, without building the table.  Where the C++ wrapper
        cannot be built (a compiler that builds inductor's kernels but not its wrapper), the graphs
        call their kernels from Python instead."""
        try:
            self._trial(S, m, curved)
        except Exception:
            if not self.cpp_wrapper:
                raise
            self.cpp_wrapper = False
            self._fns.clear()
            self._trial(S, m, curved)

    def _trial(self, S: torch.Tensor, m: int, curved: bool) -> None:
        float(self._steps_from(S, 0, m, None).sum())  # ``curvature``'s table is built with ``lagged`` steps
        if curved:
            zeros = self.problem.curvature_zeros(S)
            self._mark_static(zeros[:2])
            float(self._steps_from(S, 0, m, zeros).sum())

    def _steps_from(
        self, S: torch.Tensor, k: int, m: int, table: tuple[torch.Tensor, torch.Tensor, int] | None
    ) -> torch.Tensor:
        """The m steps from step k with the term of the stacked ``table`` ``(Bt, s, block)`` (None:
        none), in chunks: compiled, up to ``chunk`` equal sub-intervals a call; eager, one."""
        lengths = _lengths(m, self.problem.max_ratio)
        if self.compiled and len(set(lengths)) == 1:
            chunks = [lengths[i : i + self.chunk] for i in range(0, len(lengths), self.chunk)]
        else:
            chunks = [(r,) for r in lengths]
        for chunk in chunks:
            S = self._call(S, k, chunk, table)
            k += sum(chunk)
        return S

    def _mark_static(self, tensors: Any) -> None:
        """With CUDA graphs: ``tensors`` keep their addresses, so a replay reads them where they are
        (no copy into the graph)."""
        if self.graphs:
            for t in tensors:
                if isinstance(t, torch.Tensor):
                    torch._dynamo.mark_static_address(t, guard=False)

    def _call(
        self, S: torch.Tensor, k: int, lengths: tuple[int, ...], table: tuple[torch.Tensor, torch.Tensor, int] | None
    ) -> torch.Tensor:
        """Sub-intervals of ``lengths`` (equal, or one) from step k: their batch indices and
        coefficients as views of the step tables, their table entries as a view of every step's."""
        problem = self.problem
        batches, columns = self._step_tables(S)
        m = sum(lengths)
        ix = None if batches is None else batches[k : k + m]
        coefficients = tuple(c[k : k + m] if isinstance(c, torch.Tensor) else c for c in columns)
        Bt = s = entries = None
        if table is not None:
            Bt, s, block = table
            entries = self._entries(block)[k : k + m : lengths[0]]  # each sub-interval's start's entry
        fn = self._function(lengths, Bt is not None, ix is not None)
        with torch.no_grad():  # one grad mode for every call (a guard of the graph); grad() ignores it
            out = fn(S[0], lengths, ix, problem.model.X, problem.model.y, coefficients, Bt, s, entries)
        return out.clone() if self.graphs else out  # a graph's output is overwritten by its next replay

    def _term_table(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The stacked curvature table ``(Bt, s, block)`` (built on first use)."""
        if self._table is None:
            self._table = self.problem._curvature_table().stacked
            self._mark_static(self._table[:2])
        return self._table

    def _entries(self, block: int) -> torch.Tensor:
        """Every step's table entry (``k // block``), on the device once."""
        if self._entry_of is None or self._entry_of[0] != block:
            self._entry_of = (block, self.problem.ops.index(np.arange(self.problem.n_steps) // block))
        return self._entry_of[1]

    def _step_tables(self, S: torch.Tensor) -> tuple[torch.Tensor | None, tuple[Any, ...]]:
        """Every step's batch indices and optimizer coefficients (the same per-row values as the
        propagator's), on the problem's device once: a sub-interval takes views of them, with no
        copies from the host between the graphs of a chain."""
        if self._steps is None:
            problem = self.problem
            steps = np.arange(problem.n_steps)
            table = None if problem.schedule.full_batch else problem.ops.index(problem.table)
            columns = problem.optimizer.fine_coefficients(S.expand(steps.size, -1), steps, problem.ops, problem.lrs)
            self._mark_static((problem.model.X, problem.model.y, table, *columns))
            self._steps = table, columns
        return self._steps
