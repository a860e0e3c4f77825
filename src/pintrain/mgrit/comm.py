"""Communication for the solver: a do-nothing single-process communicator and an MPI one (mpi4py).

The solver asks for very little: send my last state to the right neighbour and receive the left
one's (one vector per boundary, straight from and into the state arrays, no pickling), sum and
max reductions of one float, and gathering / scattering the rows of the levels that are solved on
rank 0.  mpi4py is imported only when a communicator is used.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from ..errors import DivergenceError, OptionError

T = TypeVar("T")
ABORT_GRACE_S = 0.5  # seconds between a failed rank's message and MPI_Abort


def _error_info(err: DivergenceError | None) -> dict[str, Any] | None:
    if err is None:
        return None
    return {
        "message": str(err),
        "iteration": err.iteration,
        "level": err.level,
        "step": err.step,
        "residuals": err.residuals,
    }


def _error_from_info(info: dict[str, Any]) -> DivergenceError:
    return DivergenceError(
        info["message"],
        iteration=info["iteration"],
        level=info["level"],
        step=info["step"],
        residuals=info["residuals"],
    )


_MPI_ENV = ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS", "HYDRA_CONTROL_FD")


class SerialComm:
    """One process: every operation is the identity."""

    rank = 0
    size = 1
    is_mpi = False

    def shift_right(self, send: np.ndarray | None, recv: np.ndarray | None) -> None:
        return None

    def allreduce_sum(self, x: float) -> float:
        return x

    def allreduce_max(self, x: float) -> float:
        return x

    def first_flagged(self, flagged: bool) -> int:
        """Lowest rank that passed ``flagged=True``, or ``size`` if none."""
        return 0 if flagged else 1

    def bcast(self, obj: Any, root: int = 0) -> Any:
        return obj

    def gather_rows(self, local: np.ndarray, counts: list[int]) -> np.ndarray | None:
        return local

    def scatter_rows(self, full: np.ndarray | None, local: np.ndarray, counts: list[int]) -> None:
        assert full is not None
        local[...] = full

    def abort(self, code: int) -> None:
        raise SystemExit(code)

    # -- collective error handling: with one process, plain Python ---------------------------------
    def raise_collective(self, err: DivergenceError | None) -> None:
        """Raise ``err`` on every rank (the lowest rank's, if several have one)."""
        if err is not None:
            raise err

    def on_root(self, work: Callable[[], None]) -> None:
        """Run ``work`` on rank 0 alone; a divergence there is raised on every rank."""
        work()

    def guarded(self, run: Callable[[], T]) -> T:
        """``run()``; on several ranks, a failure on one rank ends all of them (no rank waits forever)."""
        return run()


class MPIComm:
    """An mpi4py communicator behind the same small interface."""

    is_mpi = True

    def __init__(self, comm: Any) -> None:
        from mpi4py import MPI

        self.MPI = MPI
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.left = self.rank - 1 if self.rank > 0 else MPI.PROC_NULL
        self.right = self.rank + 1 if self.rank < self.size - 1 else MPI.PROC_NULL
        self._empty = np.empty(0)
        self._alone = False  # True while rank 0 works on the levels it holds alone

    def shift_right(self, send: np.ndarray | None, recv: np.ndarray | None) -> None:
        """Send ``send`` to rank + 1 and receive rank - 1's into ``recv`` (None at the ends)."""
        sbuf = send if send is not None else self._empty
        rbuf = recv if recv is not None else self._empty
        self.comm.Sendrecv(
            sendbuf=sbuf,
            dest=self.right if send is not None else self.MPI.PROC_NULL,
            recvbuf=rbuf,
            source=self.left if recv is not None else self.MPI.PROC_NULL,
        )

    def allreduce_sum(self, x: float) -> float:
        buf = np.array([x], dtype=np.float64)
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        return float(buf[0])

    def allreduce_max(self, x: float) -> float:
        buf = np.array([x], dtype=np.float64)
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.MAX)
        return float(buf[0])

    def first_flagged(self, flagged: bool) -> int:
        buf = np.array([self.rank if flagged else self.size], dtype=np.int64)
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.MIN)
        return int(buf[0])

    def bcast(self, obj: Any, root: int = 0) -> Any:
        return self.comm.bcast(obj, root=root)  # rare, small control messages only

    def gather_rows(self, local: np.ndarray, counts: list[int]) -> np.ndarray | None:
        d = local.shape[1]
        full = np.empty((sum(counts), d), dtype=local.dtype) if self.rank == 0 else None
        sizes = [c * d for c in counts]
        recv = [full, (sizes, None)] if self.rank == 0 else None
        self.comm.Gatherv(np.ascontiguousarray(local), recv, root=0)
        return full

    def scatter_rows(self, full: np.ndarray | None, local: np.ndarray, counts: list[int]) -> None:
        d = local.shape[1]
        sizes = [c * d for c in counts]
        send = [full, (sizes, None)] if self.rank == 0 else None
        buf = local if local.flags.c_contiguous else np.empty_like(local)
        self.comm.Scatterv(send, buf, root=0)
        if buf is not local:
            local[...] = buf

    def abort(self, code: int) -> None:
        # give the launcher a moment to forward what this rank just wrote to stderr: MPI_Abort tears
        # the job down at once, and mpiexec dropped the failed rank's message in about 1 run of 6
        time.sleep(ABORT_GRACE_S)
        self.comm.Abort(code)

    # -- collective error handling ------------------------------------------------------------
    def raise_collective(self, err: DivergenceError | None) -> None:
        """Raise ``err`` on every rank (the lowest rank's, if several have one); collective."""
        first = self.first_flagged(err is not None)
        if first == self.size:
            return
        raise _error_from_info(self.bcast(_error_info(err), root=first))

    def on_root(self, work: Callable[[], None]) -> None:
        """Run ``work`` on rank 0 alone (the other ranks wait); a divergence there is raised on every
        rank.  Nested calls (work that itself asks for rank 0) run directly."""
        if self._alone:
            work()  # already inside rank 0's solo part: nobody else is listening
            return
        err: DivergenceError | None = None
        if self.rank == 0:
            self._alone = True
            try:
                work()
            except DivergenceError as e:
                err = e
            finally:
                self._alone = False
        info = self.bcast(_error_info(err), root=0)
        if info is not None:
            raise _error_from_info(info)

    def guarded(self, run: Callable[[], T]) -> T:
        """``run()``, raised identically on every rank when it is a divergence or a bad option; any
        other failure on one rank prints that rank's message and aborts all ranks, since the others
        would wait for it forever (Ctrl-C: one line per rank, exit 130)."""
        try:
            return run()
        except (DivergenceError, OptionError):
            raise
        except KeyboardInterrupt:
            print(f"pintrain: rank {self.rank} of {self.size}: interrupted", file=sys.stderr, flush=True)
            self.abort(130)
            raise
        except BaseException as err:
            import traceback

            print(
                f"pintrain: rank {self.rank} of {self.size} failed: {type(err).__name__}: {err}",
                file=sys.stderr,
                flush=True,
            )
            traceback.print_exc(file=sys.stderr)
            sys.stderr.flush()
            self.abort(1)
            raise


def under_mpiexec() -> bool:
    """True when this process was started by an MPI launcher (without importing MPI)."""
    return any(name in os.environ for name in _MPI_ENV)


def resolve(comm: Any = None) -> SerialComm | MPIComm:
    """The communicator to use: ``comm`` if given (an mpi4py communicator, or "serial"), else
    COMM_WORLD when running under mpiexec with more than one rank, else the single-process one."""
    if comm is None:
        if not under_mpiexec():
            return SerialComm()
        try:
            from mpi4py import MPI
        except ImportError:
            return SerialComm()
        comm = MPI.COMM_WORLD
    if isinstance(comm, SerialComm | MPIComm):
        return comm
    if isinstance(comm, str) and comm == "serial":
        return SerialComm()
    if not all(callable(getattr(comm, name, None)) for name in ("Get_rank", "Get_size", "Sendrecv", "Allreduce")):
        raise OptionError("comm", comm, 'None, "serial" or an mpi4py communicator (e.g. MPI.COMM_WORLD)')
    wrapped = MPIComm(comm)
    return wrapped if wrapped.size > 1 else SerialComm()
