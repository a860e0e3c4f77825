"""A user's ``torch.nn.Module``, loss and data as a model backend (:class:`pintrain.training.Model`).

Many weight vectors are evaluated at once with ``torch.func.vmap`` over ``torch.func.grad`` of
``torch.func.functional_call``: one batched forward and backward pass.  A step's loss is
``loss_fn(model(X[batch]), y[batch])``; the union of r step batches is one forward pass over their
samples with the loss taken on each step's part and summed.  ``serial_states`` is the usual
``torch.optim`` loop, the reference MGRIT must match.
"""

from __future__ import annotations

import copy
from contextlib import AbstractContextManager
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from ..arrays import CPU_PASS_BYTES, ArrayOps
from ..errors import OptionError, PintrainError, check_int
from ..training.model import Batches
from .pooling import mean_pools
from .recurrent import unroll

DTYPES = {"float64": torch.float64, "float32": torch.float32}


class UnsupportedModel(PintrainError):
    """The module cannot be trained as a deterministic evolution (the message says why)."""


def compile_failure(what: str, err: Exception, hint: str = "") -> UnsupportedModel:
    """The refusal for a ``torch.compile`` of ``what`` that failed with ``err`` (its first line)."""
    text = str(err).strip()
    return UnsupportedModel(
        f"torch.compile could not compile {what}: {type(err).__name__}: {text.splitlines()[0] if text else ''}; "
        f"run with compile=False{hint}"
    )


class TorchOps:
    """:class:`pintrain.arrays.ArrayOps` for torch tensors on one device (zero-copy from numpy on the CPU)."""

    name = "torch"

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.cpu = self.device.type == "cpu"
        # a GPU wants its batches whole (no caches to fit, a launch per pass); a CPU in cache-sized passes
        self.pass_bytes = CPU_PASS_BYTES if self.cpu else 1 << 40

    def asarray(self, U: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(U))
        return t if self.cpu else t.to(self.device)

    def to_numpy(self, S: torch.Tensor) -> np.ndarray:
        return S.numpy() if self.cpu else S.detach().cpu().numpy()

    def native(self, x: Any) -> bool:
        return isinstance(x, torch.Tensor) and x.device == self.device

    def empty(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        return torch.empty(shape, dtype=like.dtype, device=like.device)

    def zeros(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        return torch.zeros(shape, dtype=like.dtype, device=like.device)

    def index(self, js: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(js, dtype=np.int64))
        return t if self.cpu else t.to(self.device)

    def column(self, v: Any, like: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(v, dtype=like.dtype, device=like.device).reshape(-1, 1)

    def where(self, cond: Any, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.where(cond, a, b)

    def sqrt(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(x)

    def lerp(self, a: torch.Tensor, b: torch.Tensor, weight: float) -> torch.Tensor:
        return torch.lerp(a, b, weight)

    def addcmul(self, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, value: float) -> torch.Tensor:
        return torch.addcmul(a, b, c, value=value)

    def clamp_min(self, x: torch.Tensor, low: float) -> torch.Tensor:
        return torch.clamp(x, min=low)

    def concat(self, parts: list[torch.Tensor], out: torch.Tensor | None = None) -> torch.Tensor:
        return torch.cat(parts, dim=1) if out is None else torch.cat(parts, dim=1, out=out)

    def concat_rows(self, parts: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(parts, dim=0)

    def add_into(self, out: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
        torch.add(a, b, out=out)

    def finite_rows(self, x: torch.Tensor) -> np.ndarray:
        return torch.isfinite(x).all(dim=-1).cpu().numpy()

    def max_abs_rows(self, x: torch.Tensor) -> np.ndarray:
        if x.numel() * x.element_size() <= self.pass_bytes:  # (a GPU takes them whole)
            return x.abs().amax(dim=1).cpu().numpy()
        # on a CPU a level's states at once made a temporary of their size (the digits MLP with Adam, N = 16384:
        # 0.47 GB, 0.26 s a check); in passes that stay in cache, 0.08 s
        rows = max(1, self.pass_bytes // max(1, x.shape[1] * x.element_size()))
        return torch.cat([part.abs().amax(dim=1) for part in x.split(rows)]).numpy()

    def no_grad(self) -> AbstractContextManager[Any]:
        return torch.no_grad()

    def free_bytes(self) -> int:
        if self.device.type == "cuda":
            return int(torch.cuda.mem_get_info(self.device)[0])
        from ..errors import available_memory

        return available_memory()


def check_module(model: Any) -> None:
    """Refuse, with the reason, a module whose training step is not a pure function of the weights."""
    if not isinstance(model, nn.Module):
        raise UnsupportedModel(f"model must be a torch.nn.Module, not {type(model).__name__}")
    tracked = {f"{name}.{b}" if name else b for name, _ in batchnorms(model) for b in BN_BUFFERS}
    buffers = [name for name, _ in model.named_buffers() if name not in tracked]
    if buffers:
        raise UnsupportedModel(
            f"the module has buffers ({', '.join(buffers[:4])}{', ...' if len(buffers) > 4 else ''}), state that "
            "its forward pass may update; MGRIT evolves the weights and the optimizer state, and of the "
            "buffers only BatchNorm's running statistics (a function of the weights' trajectory, computed after "
            "the solve). Register constants as non-persistent attributes, or use a module without such buffers"
        )
    if model.training:
        random = [name or type(model).__name__ for name, mod in model.named_modules() if _is_random(mod)]
        if random:
            raise UnsupportedModel(
                f"the module has dropout ({', '.join(random[:4])}) and is in training mode: it draws new random "
                "numbers at every call, so a training step is not a function of the weights and the step index. "
                "Remove the dropout, or call model.eval() to turn it off"
            )
    if not any(p.requires_grad for p in model.parameters()):
        raise UnsupportedModel("the module has no trainable parameters (requires_grad=True)")


BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


BatchNorm = nn.modules.batchnorm._BatchNorm


def batchnorms(module: nn.Module) -> list[tuple[str, BatchNorm]]:
    """The BatchNorm layers of ``module`` that keep running statistics."""
    return [
        (name, mod) for name, mod in module.named_modules() if isinstance(mod, BatchNorm) and mod.track_running_stats
    ]


def _is_random(mod: nn.Module) -> bool:
    return isinstance(mod, nn.modules.dropout._DropoutNd | nn.RReLU)


def torch_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise OptionError("dtype", dtype, '"float64" or "float32"')
        return DTYPES[dtype]
    if dtype not in DTYPES.values():
        raise OptionError("dtype", dtype, "torch.float64 or torch.float32")
    return dtype


# compiled gradients take at most this many rows a call (a power of two; fewer are padded to one): on a
# CPU calls whose temporaries stay in cache; on a GPU, where a call costs its launches (an H200, the
# digits MLP with Adam: about 3 ms a compiled call of 128 rows, 24 us a row), as many as the samples'
# bound lets a call take (``max_batch_samples``)
COMPILED_ROWS = 128
COMPILED_ROWS_DEVICE = 4096


class TorchModel:
    """``module`` with ``loss_fn`` on ``(X, y)`` as a model backend; the module given is copied
    (converted to ``dtype`` and moved to ``device``), never changed.  The data, the weights and the
    solver's states live on ``device`` ("cpu", "cuda", "cuda:1", "mps", ...).  ``max_batch_samples``
    bounds the samples one vectorised pass takes (rows are processed in chunks), to bound memory on
    coarse levels.  ``compile=True``: the batched gradients go through ``torch.compile``, in calls
    of a power of two rows (at most ``compiled_rows``), so that a run compiles a few shapes once."""

    ops: ArrayOps

    def __init__(
        self,
        module: nn.Module,
        loss_fn: Any,
        X: Any,
        y: Any,
        *,
        dtype: str | torch.dtype = "float64",
        max_batch_samples: int = 1 << 16,
        test_data: tuple[Any, Any] | None = None,
        device: str | torch.device | None = None,
        compile: bool = False,
    ) -> None:
        check_module(module)
        if not isinstance(compile, bool):
            raise OptionError("compile", compile, "True or False")
        self.device = torch_device(device)
        self.ops = TorchOps(self.device)
        check_int("max_batch_samples", max_batch_samples, 1)
        dtype = torch_dtype(dtype)
        if not callable(loss_fn):
            raise OptionError("loss_fn", loss_fn, "a callable loss_fn(output, target) -> scalar tensor")
        X, y = torch.as_tensor(X).cpu(), torch.as_tensor(y).cpu()
        if X.ndim < 1 or y.ndim < 1 or X.shape[0] != y.shape[0] or X.shape[0] == 0:
            raise OptionError(
                "data", f"X {tuple(X.shape)}, y {tuple(y.shape)}", "X and y with the same number (>0) of rows"
            )
        self.X = (X.to(dtype) if X.is_floating_point() else X).to(self.device)
        self.y = (y.to(dtype) if y.is_floating_point() else y).to(self.device)
        for label, data in (("X", self.X), ("y", self.y)):
            if data.is_floating_point() and not torch.isfinite(data).all():
                raise OptionError(label, "data with NaN/inf", "finite values")
        self.dtype = dtype
        # the module as the user gave it (for the trained copies handed back), and the one stepped:
        # the same with GRU/LSTM layers written out in operations that torch.func can batch
        self.original = copy.deepcopy(module).to(device=self.device, dtype=dtype)
        try:
            self.module, self.unrolled = unroll(copy.deepcopy(self.original))
        except ValueError as err:
            raise UnsupportedModel(str(err)) from None
        # compiled on a CPU: average pools as a reshape and a mean, whose compiled code is the cheaper there
        # under vmap (eager it is the dearer)
        self.mean_pooled: list[str] = []  # the average pools swapped (their names)
        if compile and self.ops.cpu:
            self.module, self.mean_pooled = mean_pools(self.module)
        # BatchNorm in training mode normalises by the batch's own statistics and only writes its running
        # statistics, which no step reads: the stepped copy drops them (a pure function of the weights);
        # they follow from the converged trajectory (:meth:`running_stats`)
        self.batchnorms = [name for name, _ in batchnorms(self.module)]
        # a layer that normalises by its batch couples a batch's samples: a union of step batches must
        # then be evaluated step batch by step batch (every BatchNorm of the stepped copy uses batch statistics)
        self.batch_coupled = any(isinstance(mod, BatchNorm) for mod in self.module.modules())
        for _, bn in batchnorms(self.module):
            bn.track_running_stats = False
            bn.running_mean = bn.running_var = bn.num_batches_tracked = None
        self.loss_fn = loss_fn
        self.max_batch_samples = int(max_batch_samples)
        self.test_data = test_data
        self.n_samples = int(X.shape[0])
        named = [(n, p) for n, p in self.module.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in named]
        self.shapes = [tuple(p.shape) for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        self.n_params = sum(self.sizes)
        with torch.no_grad():
            self.w0 = torch.cat([p.detach().reshape(-1) for _, p in named])
        if not torch.isfinite(self.w0).all():
            raise OptionError("model", "parameters with NaN/inf", "finite initial weights")
        self._grad_shared = vmap(grad(self._loss_one), in_dims=(0, None, None))
        self._grad_one = vmap(grad(self._loss_one))
        self._grad_union = vmap(grad(self._loss_union), in_dims=(0, 0, 0, None))
        self._loss_shared = vmap(self._loss_one, in_dims=(0, None, None))
        self._loss_many = vmap(self._loss_one)
        self._loss_unions = vmap(self._loss_union, in_dims=(0, 0, 0, None))
        self.compiled = compile
        self.compiled_rows = COMPILED_ROWS if self.ops.cpu else COMPILED_ROWS_DEVICE
        self._lone_copy: tuple[nn.Module, list[nn.Parameter]] | None = None  # the lone path's module
        # a trial gradient of two rows: refuse what torch.func (or torch.compile) cannot run now, not in the
        # middle of a solve
        samples = np.arange(min(self.n_samples, 8), dtype=np.int64)
        trial = (torch.stack([self.w0, self.w0]), Batches(np.tile(samples, (2, 1))))
        try:
            float(self._gradient_eager(*trial).sum())  # waits for a device
        except PintrainError:
            raise
        except Exception as err:
            raise UnsupportedModel(
                f"a training step of this module and loss failed under torch.func (functional_call, grad, "
                f"vmap): {type(err).__name__}: {err}. The loss must return a scalar, and the module must not "
                "use .item(), data-dependent Python control flow or in-place updates of its inputs"
            ) from err
        if compile:
            self._compile(*trial)

    # -- pure functions of the flat weights ---------------------------------------------------
    def unflatten(self, w: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{name: tensor}`` views of a flat weight vector (or, under vmap, of one row)."""
        out, pos = {}, 0
        for name, shape, size in zip(self.names, self.shapes, self.sizes, strict=True):
            out[name] = w[pos : pos + size].reshape(shape)
            pos += size
        return out

    def _loss_one(self, w: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(functional_call(self.module, self.unflatten(w), (xb,)), yb)

    def _loss_union(self, w: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor, r: int) -> torch.Tensor:
        """Sum of r step losses: one forward pass over their batches, the loss on each step's part;
        with BatchNorm (which normalises by its batch) each step's batch on its own, as its step does."""
        if self.batch_coupled:
            b = xb.shape[0] // r
            per_step = vmap(self._loss_one, in_dims=(None, 0, 0))
            return per_step(w, xb.reshape(r, b, *xb.shape[1:]), yb.reshape(r, b, *yb.shape[1:])).sum()
        out = functional_call(self.module, self.unflatten(w), (xb,))
        b = out.shape[0] // r
        return vmap(self.loss_fn)(out.reshape(r, b, *out.shape[1:]), yb.reshape(r, b, *yb.shape[1:])).sum()

    def _loss_union_lone(
        self, w: torch.Tensor | None, xb: torch.Tensor, yb: torch.Tensor, r: int, forward: Any = None
    ) -> torch.Tensor:
        """:meth:`_loss_union` of one row, its r step losses in a Python loop instead of vmap's (the same
        sum; 340 us against 560 for the gradient of 2 batches of the digits MLP, one thread).  The
        network is ``forward`` when given (a module whose parameters are set), else the stepped module
        at ``w``."""
        if forward is None:
            assert w is not None, "the weights, or a forward with its parameters set"
            weights = self.unflatten(w)

            def forward(x: torch.Tensor) -> torch.Tensor:
                return functional_call(self.module, weights, (x,))

        if r == 1:
            return cast(torch.Tensor, self.loss_fn(forward(xb), yb))
        b = xb.shape[0] // r
        part = [slice(j * b, (j + 1) * b) for j in range(r)]
        if self.batch_coupled:  # each step's batch normalised on its own
            return cast(torch.Tensor, sum(self.loss_fn(forward(xb[s]), yb[s]) for s in part))
        out = forward(xb)
        return cast(torch.Tensor, sum(self.loss_fn(out[s], yb[s]) for s in part))

    # -- the Model protocol ---------------------------------------------------------------------
    def initial_weights(self) -> torch.Tensor:
        return self.w0.clone()

    def _chunk_rows(self, batches: Batches) -> int:
        """Rows one vectorised call takes: its samples within ``max_batch_samples``."""
        per_row = self.n_samples if batches.idx is None else max(1, batches.idx.shape[1])
        return max(1, self.max_batch_samples // per_row)

    def _chunks(self, W: torch.Tensor, batches: Batches) -> list[tuple[torch.Tensor, np.ndarray | None]]:
        chunk = self._chunk_rows(batches)
        return [
            (W[s : s + chunk], None if batches.idx is None else batches.idx[s : s + chunk])
            for s in range(0, W.shape[0], chunk)
        ]

    def _eval(self, W: torch.Tensor, batches: Batches, shared: Any, one: Any, union: Any) -> torch.Tensor:
        parts = []
        for w, idx in self._chunks(W, batches):
            if idx is None:
                parts.append(shared(w, self.X, self.y))
                continue
            ix = self.ops.index(idx)
            xb, yb = self.X[ix], self.y[ix]
            parts.append(one(w, xb, yb) if batches.r == 1 else union(w, xb, yb, batches.r))
        out = torch.cat(parts) if len(parts) > 1 else parts[0]
        return out if batches.weight == 1.0 else batches.weight * out

    def gradient(self, W: torch.Tensor, batches: Batches) -> torch.Tensor:
        if self.compiled:
            return self._gradient_compiled(W, batches)
        return self._gradient_eager(W, batches)

    def _gradient_eager(self, W: torch.Tensor, batches: Batches) -> torch.Tensor:
        return self._eval(W, batches, self._grad_shared, self._grad_one, self._grad_union)

    def gradient_lone(self, W: torch.Tensor, batches: Batches) -> torch.Tensor:
        """One row stepped on its own (the coarsest level's sequential solve; rounds differently
        from :meth:`gradient`, so the solver takes it only there).  Compiled: the compiled call.
        Else plain autograd (for r batches the same union loss as vmap's: one forward pass, each
        step's loss on its part, in a loop).  On a CPU it costs 0.35 / 0.36 / 0.40 / 0.55-0.59 /
        0.59-0.86 of vmap's call for 1 / 2 / 4 / 8 / 16 batches (digits MLP, one thread, float32
        and float64); on a GPU a third of vmap's for one batch and more than vmap's for r > 1
        (measured before the loop over the parts, which took 2 batches from 560 to 340 us on a CPU)."""
        if self.compiled:
            return self._gradient_compiled(W, batches)
        if batches.r == 1 or (batches.r <= 16 and self.device.type == "cpu"):
            return self._gradient_one_row(W, batches)
        return self._gradient_eager(W, batches)

    def _row_data(self, batches: Batches) -> tuple[torch.Tensor, torch.Tensor, int]:
        """``(xb, yb, r)``: the samples and targets of one row's batches (``batches.idx`` of one row)."""
        if batches.idx is None:
            return self.X, self.y, 1
        ix = self.ops.index(batches.idx[0])
        return self.X[ix], self.y[ix], batches.r

    def _row_loss(self, batches: Batches) -> Any:
        """The loss of one row's batches as a function of its weights."""
        xb, yb, r = self._row_data(batches)
        if r == 1:
            return lambda w: self._loss_one(w, xb, yb)
        return lambda w: self._loss_union_lone(w, xb, yb, r)

    def _gradient_one_row(self, W: torch.Tensor, batches: Batches) -> torch.Tensor:
        """One row's gradient by plain autograd on a copy of the stepped module whose parameters are
        set to the row (a module call, not ``functional_call``, whose per-call swapping of the
        parameters cost about 90 of 320 us for the digits MLP): the same operations, the same value."""
        module, params = self._lone_module(W[0])
        xb, yb, r = self._row_data(batches)
        g = self._module_gradient(module, params, xb, yb, r)[None]
        return g if batches.weight == 1.0 else batches.weight * g

    def lone_gradients(self, w: torch.Tensor, data: list[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
        """The gradients at the one weight vector ``w`` of the step losses on each ``(xb, yb)`` of
        ``data``, each as :meth:`_gradient_one_row` gives it for that batch (the same operations, the
        same values), with the module's weights set once for all of them."""
        module, params = self._lone_module(w)
        return [self._module_gradient(module, params, xb, yb, 1) for xb, yb in data]

    def _module_gradient(
        self, module: nn.Module, params: list[nn.Parameter], xb: torch.Tensor, yb: torch.Tensor, r: int
    ) -> torch.Tensor:
        """The flat gradient of the r step losses on ``(xb, yb)`` with respect to ``module``'s ``params``."""
        with torch.enable_grad():
            loss = self._loss_union_lone(None, xb, yb, r, forward=module)
            grads = torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True)
        return torch.cat([g.reshape(-1) for g in grads])

    def _lone_module(self, w: torch.Tensor) -> tuple[nn.Module, list[nn.Parameter]]:
        """The lone path's own copy of the stepped module (made on first use) with its trainable
        parameters set to the flat weights ``w``, and those parameters in ``names`` order."""
        if self._lone_copy is None:
            module = copy.deepcopy(self.module)
            named = dict(module.named_parameters())
            self._lone_copy = (module, [named[n] for n in self.names])
        module, params = self._lone_copy
        with torch.no_grad():
            for p, v in zip(params, self.unflatten(w).values(), strict=True):
                p.copy_(v)
        return module, params

    def hessian_vectors(self, w: torch.Tensor, batches: Batches, V: torch.Tensor) -> torch.Tensor:
        """Hessian-vector products of one row's loss over ``batches`` at ``w``, one per row of ``V``:
        forward-over-reverse (``jvp`` of ``grad``) under vmap, about 0.8-0.9 of a gradient's cost a
        vector for 8 vectors (LSTM cell, LayerNorm MLP, one thread).  Compiled (``compile=True``): one
        graph for the ``curvature`` table's shapes (digits MLP, 8 vectors, 2 batches, one thread: 4.2 -> 0.4 ms)."""
        if self.compiled:
            xb, yb, r = self._row_data(batches)
            H = self._c_hvp(w, xb, yb, V, r)
        else:
            with torch.enable_grad():
                g = grad(self._row_loss(batches))
                H = vmap(lambda u: torch.func.jvp(g, (w,), (u,))[1])(V)
        return H if batches.weight == 1.0 else batches.weight * H

    def hessian_vectors_many(self, W: torch.Tensor, batches: Batches, V: torch.Tensor) -> torch.Tensor:
        """:meth:`hessian_vectors` of several rows at once: row i's products at ``W[i]`` over row i's
        batches (``batches.idx[i]``) with the vectors ``V[i]`` ((rows, k, P) -> (rows, k, P)): eager,
        one vmap over the rows (the digits MLP, 64 rows of 8 vectors over 2 batches, one thread: 0.68
        ms a row, against 4.2 ms a lone eager call); compiled, the lone graph a row (0.5 ms), one
        host synchronisation for all (on a GPU, where the lone calls waited for the device each)."""
        shared = batches.idx is None  # full batch: every row's samples are all of them
        if batches.idx is None:
            xb, yb, r = self.X, self.y, 1
        else:
            ix = self.ops.index(batches.idx)
            xb, yb, r = self.X[ix], self.y[ix], batches.r
        dims = (0, None, None, 0) if shared else (0, 0, 0, 0)
        if self.compiled:  # the compiled lone graph row by row (dynamo fails on this vmap of a vmap)
            rows = range(W.shape[0])
            H = torch.stack([self._c_hvp(W[i], *((xb, yb) if shared else (xb[i], yb[i])), V[i], r) for i in rows])
        else:
            with torch.enable_grad():
                H = vmap(lambda w, x, y, v: self._hvp(w, x, y, v, r), in_dims=dims)(W, xb, yb, V)
        return H if batches.weight == 1.0 else batches.weight * H

    def _hvp(self, w: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor, V: torch.Tensor, r: int) -> torch.Tensor:
        """The products of :meth:`hessian_vectors` on one row's samples (what ``compile=True`` compiles)."""
        if r == 1:
            g = grad(lambda v: self._loss_one(v, xb, yb))
        else:
            g = grad(lambda v: self._loss_union_lone(v, xb, yb, r))
        return cast(torch.Tensor, vmap(lambda u: torch.func.jvp(g, (w,), (u,))[1])(V))

    # -- compiled gradients (compile=True) ---------------------------------------------------------
    def _compile(self, W: torch.Tensor, trial: Batches) -> None:
        """``torch.compile`` the batched gradients.  A compiled function is specialised to its row
        count (vmap's batch size), so calls take at most ``compiled_rows`` rows, padded to a power
        of two: a handful of shapes, each compiled once (seconds) and then reused."""
        import torch._dynamo

        # one compiled graph per (function, row bucket, r): more than dynamo's default cache of 8
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        self._c_shared = torch.compile(self._grad_shared, dynamic=False)
        self._c_one = torch.compile(self._grad_one, dynamic=False)
        self._c_union = torch.compile(self._grad_union, dynamic=False)
        self._c_hvp = torch.compile(self._hvp, dynamic=False)  # the curvature table's (built on first use)
        try:
            float(self._gradient_compiled(W, trial).sum())
        except Exception as err:
            raise compile_failure(
                "this module's batched gradient", err, " (on a CPU, torch.compile also needs a C++ compiler)"
            ) from None

    def compiled_chunks(self, rows: int, batches: Batches) -> list[tuple[int, int, Any]]:
        """The calls a compiled batched function of ``rows`` rows over ``batches`` takes: ``(start,
        n, pad)`` for rows ``start .. start + n``, at most ``compiled_rows`` (a power of two:
        :data:`COMPILED_ROWS` on a CPU, :data:`COMPILED_ROWS_DEVICE` on other devices) and no more
        than the samples' bound lets a call take, and ``pad(x)``, the call's rows of ``x`` padded to
        the next power of two with copies of its first row (finite weights, a real batch): a handful
        of shapes, each compiled once."""
        cap = min(self.compiled_rows, self._chunk_rows(batches))
        cap = 1 << (cap.bit_length() - 1)  # a power of two
        calls = []
        for s in range(0, rows, cap):
            n = min(cap, rows - s)
            size = 1 << (n - 1).bit_length()  # the bucket: the next power of two

            def pad(x: Any, s: int = s, n: int = n, size: int = size) -> Any:
                part = x[s : s + n]
                return part if size == n else torch.cat([part, part[:1].expand(size - n, *part.shape[1:])])

            calls.append((s, n, pad))
        return calls

    def _gradient_compiled(self, W: torch.Tensor, batches: Batches) -> torch.Tensor:
        out = torch.empty((W.shape[0], self.n_params), dtype=W.dtype, device=W.device)
        ix_all = None if batches.idx is None else self.ops.index(batches.idx)
        for s, n, pad in self.compiled_chunks(W.shape[0], batches):
            w = pad(W)
            if ix_all is None:
                g = self._c_shared(w, self.X, self.y)
            else:
                ix = pad(ix_all)
                xb, yb = self.X[ix], self.y[ix]
                g = self._c_one(w, xb, yb) if batches.r == 1 else self._c_union(w, xb, yb, batches.r)
            out[s : s + n] = g[:n]
        return out if batches.weight == 1.0 else batches.weight * out

    def loss(self, W: torch.Tensor, batches: Batches) -> torch.Tensor:
        return self._eval(W, batches, self._loss_shared, self._loss_many, self._loss_unions)

    def describe(self) -> dict[str, Any]:
        dtype = str(self.dtype).replace("torch.", "")
        return {
            "kind": "torch",
            "module": type(self.module).__name__,
            "n_params": self.n_params,
            "dtype": dtype,
            "device": str(self.device),
            "compiled": self.compiled,
            "summary": f"{type(self.module).__name__}, {self.n_params} weights, {dtype}"
            + ("" if self.device.type == "cpu" else f", on {self.device}"),
        }

    # -- the reference: the user's own loop -------------------------------------------------------
    def serial_run(
        self,
        optimizer: Any,
        table: np.ndarray | None,
        n_steps: int,
        lrs: np.ndarray | None = None,
        clip_grad_norm: float | None = None,
        keep: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Serial training the usual way: a copy of the module, ``torch.optim``, ``loss.backward()``,
        (``clip_grad_norm_``), ``opt.step()`` for every step (batch ``table[k]``, all samples if None;
        learning rate ``lrs[k]``, as a scheduler would have set it).  Returns the states after the
        steps in ``keep`` (sorted fine points; None: all, 0 .. n_steps) as rows, packed as the
        evolution's (weights, optimizer slots, step), and the loss of every step's batch as the loop
        computed it.  Memory: the kept states and n_steps losses, no more."""
        model = copy.deepcopy(self.module)
        params = [model.get_parameter(name) for name in self.names]
        opt = optimizer.torch_optimizer(params)
        u0 = self.ops.to_numpy(optimizer.init(self.w0, self.ops))
        points = np.arange(n_steps + 1) if keep is None else np.asarray(keep, dtype=np.int64)
        out = np.empty((points.size, u0.size), dtype=u0.dtype)
        row = 0
        if points.size and points[0] == 0:
            out[0], row = u0, 1
        losses = torch.empty(n_steps, dtype=self.dtype, device=self.device)
        rows = None if table is None else self.ops.index(table)
        for k in range(n_steps):
            xb, yb = (self.X, self.y) if rows is None else (self.X[rows[k]], self.y[rows[k]])
            opt.zero_grad(set_to_none=True)
            loss = self.loss_fn(model(xb), yb)
            loss.backward()
            losses[k] = loss.detach()  # no synchronisation per step
            if clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
            if lrs is not None:
                for group in opt.param_groups:
                    group["lr"] = float(lrs[k])
            opt.step()
            if row < points.size and points[row] == k + 1:
                with torch.no_grad():
                    parts = [torch.cat([p.reshape(-1) for p in params])]
                    for slot in optimizer.torch_slots:
                        parts.append(torch.cat([opt.state[p][slot].reshape(-1) for p in params]))
                    if optimizer.counts_steps:
                        parts.append(torch.tensor([float(k + 1)], dtype=self.dtype, device=self.device))
                    out[row] = self.ops.to_numpy(torch.cat(parts))
                row += 1
        return out, self.ops.to_numpy(losses).astype(np.float64)

    # -- results -------------------------------------------------------------------------------
    def module_at(self, w: torch.Tensor, stats: dict[str, torch.Tensor] | None = None) -> nn.Module:
        """A copy of the user's module with the flat weights ``w`` (and BatchNorm buffers ``stats``)."""
        out = copy.deepcopy(self.original)
        with torch.no_grad():
            for name, value in self.unflatten(w).items():
                out.get_parameter(name).copy_(value)
            for name, value in (stats or {}).items():
                out.get_buffer(name).copy_(value)
        return out

    def running_stats(self, W: torch.Tensor, table: np.ndarray | None) -> dict[str, torch.Tensor]:
        """The BatchNorm running statistics after the steps whose weights before the step are the
        rows of ``W`` (steps 0, 1, ...; batch ``table[k]``, all samples if None), from the
        module's initial buffers: each step's batch mean and unbiased variance at its weights, in
        torch's update (``momentum``, or the cumulative average when it is None)."""
        original = dict(batchnorms(self.original))
        buffers = {n: [cast(torch.Tensor, getattr(original[n], b)) for b in BN_BUFFERS] for n in self.batchnorms}
        mean = {n: b[0].clone() for n, b in buffers.items()}
        var = {n: b[1].clone() for n, b in buffers.items()}
        count = {n: int(b[2]) for n, b in buffers.items()}
        seen: dict[str, torch.Tensor] = {}
        stepped = {name: mod for name, mod in self.module.named_modules() if name in self.batchnorms}
        hooks = [
            stepped[name].register_forward_pre_hook(lambda mod, args, name=name: seen.__setitem__(name, args[0]))
            for name in self.batchnorms
        ]
        rows = None if table is None else self.ops.index(table)
        try:
            with torch.no_grad():
                for k in range(W.shape[0]):
                    xb = self.X if rows is None else self.X[rows[k]]
                    functional_call(self.module, self.unflatten(W[k]), (xb,))
                    for name in self.batchnorms:
                        x = seen[name]
                        dims = [d for d in range(x.ndim) if d != 1]
                        count[name] += 1
                        momentum = original[name].momentum
                        factor = float(momentum) if momentum is not None else 1.0 / count[name]
                        mean[name] = (1 - factor) * mean[name] + factor * x.mean(dim=dims)
                        var[name] = (1 - factor) * var[name] + factor * x.var(dim=dims, unbiased=True)
        finally:
            for h in hooks:
                h.remove()
        out = {}
        for name in self.batchnorms:
            prefix = f"{name}." if name else ""
            out[prefix + "running_mean"] = mean[name]
            out[prefix + "running_var"] = var[name]
            out[prefix + "num_batches_tracked"] = torch.tensor(count[name])
        return out

    def metrics(self, w: torch.Tensor) -> dict[str, float]:
        """Accuracy on the training data (and on ``test_data``) of the weights ``w``, for classifiers
        (integer labels); empty otherwise."""
        if self.y.is_floating_point() or self.y.ndim != 1:
            return {}
        model = self.module_at(w)
        out = {"train_accuracy": accuracy(model, self.X, self.y)}
        if self.test_data is not None:
            out["test_accuracy"] = accuracy(model, *self.test_data)
        return out


def accuracy(model: nn.Module, X: Any, y: Any) -> float:
    """Fraction of rows whose arg-max output is the label (on the module's device)."""
    first = next(model.parameters())
    X = torch.as_tensor(X).to(first.device)
    with torch.no_grad():
        pred = model(X.to(first.dtype) if X.is_floating_point() else X).argmax(dim=-1)
    return float((pred == torch.as_tensor(y).to(first.device)).double().mean())


def torch_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a torch.device that this machine has (None: the CPU), or an OptionError."""
    if device is None:
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise OptionError("device", device, 'a torch device: "cpu", "cuda", "cuda:1", "mps", ...') from None
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available() and (dev.index is None or dev.index < torch.cuda.device_count()),
        "mps": torch.backends.mps.is_available(),
    }
    if not available.get(dev.type, False):
        raise OptionError("device", str(device), f"a device this machine has ({dev.type} is not available here)")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def lr_table(optimizer: Any, scheduler: Any, n_steps: int) -> np.ndarray:
    """The learning rate of steps 0 .. n_steps - 1 under a ``torch.optim.lr_scheduler``: ``scheduler``
    is called with a torch optimizer (``lambda opt: StepLR(opt, 100, 0.5)``) and stepped once per
    training step, as in the usual loop, so the rates are the scheduler's own, float for float.
    A scheduler that also changes other hyper-parameters (OneCycleLR's momentum cycling) is refused:
    the evolution would not be the same."""
    probe = torch.zeros(1, requires_grad=True)
    opt = optimizer.torch_optimizer([probe])
    try:
        sched = scheduler(opt)
    except Exception as err:
        raise OptionError("lr_scheduler", scheduler, f"a function optimizer -> torch LR scheduler ({err})") from None
    if not callable(getattr(sched, "step", None)):
        raise OptionError("lr_scheduler", scheduler, "a function optimizer -> torch LR scheduler (with .step())")
    group = opt.param_groups[0]
    fixed = {k: v for k, v in group.items() if k not in ("lr", "params", "initial_lr")}
    out = np.empty(n_steps)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "lr_scheduler.step() before optimizer.step()": no gradients here
        for k in range(n_steps):
            out[k] = group["lr"]
            changed = [key for key, v in fixed.items() if group.get(key) != v]
            if changed:
                raise OptionError(
                    "lr_scheduler",
                    type(sched).__name__,
                    f"a scheduler of the learning rate alone (it changes {', '.join(changed)} too; for "
                    "OneCycleLR pass cycle_momentum=False)",
                )
            opt.step()
            sched.step()
    return out
