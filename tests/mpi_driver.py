"""Run under mpiexec: solve every case of mpi_cases.CASES on COMM_WORLD; rank 0 writes the results.

mpiexec -n P python tests/mpi_driver.py OUT.json         # all cases
mpiexec -n P python tests/mpi_driver.py --fail-rank R [AT [raise|kill]]
                                        # rank R raises (or is killed) at its AT-th fine batched step
"""

import json
import os
import signal
import sys
from pathlib import Path

import numpy as np
from mpi4py import MPI

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mpi_cases import CASES  # noqa: E402

from pintrain import DivergenceError  # noqa: E402
from pintrain.mgrit import solve  # noqa: E402
from pintrain.problems import Dahlquist  # noqa: E402


class FailsOnRank(Dahlquist):
    """Rank ``rank`` fails at its ``at``-th fine batched step: raises, or kills itself (SIGKILL)."""

    def __init__(self, rank, at=1, how="raise"):
        super().__init__(256)
        self.fail_rank, self.at, self.how, self.calls = rank, at, how, 0

    def step_many(self, U, ks, m):
        if MPI.COMM_WORLD.Get_rank() == self.fail_rank and m == 1 and ks.size > 2:
            self.calls += 1
            if self.calls >= self.at:
                if self.how == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                raise RuntimeError("a step failed on purpose")
        return super().step_many(U, ks, m)


def main():
    import faulthandler

    faulthandler.dump_traceback_later(90, exit=True)  # a hang detector: all cases take ~10 s per run
    comm = MPI.COMM_WORLD
    if sys.argv[1] == "--fail-rank":  # --fail-rank R [AT [raise|kill]]
        extra = sys.argv[3:]
        at = int(extra[0]) if extra else 1
        how = extra[1] if len(extra) > 1 else "raise"
        solve(FailsOnRank(int(sys.argv[2]), at, how), levels=3, cfactor=4, tol=1e-14, max_iter=30)
        return
    out = {}
    for name, (make, opts) in CASES.items():
        try:
            res = solve(make(), comm=comm, gather=True, **opts)
        except DivergenceError as err:
            msgs = comm.gather(str(err), root=0)
            out[name] = {"error": msgs, "level": err.level, "step": err.step}
            continue
        final = comm.gather(res.final_state.tolist(), root=0)
        if comm.rank == 0:
            out[name] = {
                "residuals": res.residuals,
                "iterations": res.iterations,
                "converged": res.converged,
                "states": np.asarray(res.states).tolist(),
                "first_index": res.first_index,
                "points": None if res.points is None else res.points.tolist(),
                "final_on_every_rank": final,
                "ranks": res.ranks,
            }
    if comm.rank == 0:
        Path(sys.argv[1]).write_text(json.dumps(out))


if __name__ == "__main__":
    main()
