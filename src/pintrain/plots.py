"""PNG plots of a training comparison (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .outputs import save_figure


def plot_comparison(record: dict[str, Any], path: Path) -> None:
    """Residual history (left) and the serial and MGRIT loss curves (right) of a ``compare`` record."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_r, ax_l) = plt.subplots(1, 2, figsize=(10, 4))
    res = record["mgrit"]["residuals"]
    ax_r.semilogy(range(1, len(res) + 1), res, "o-")
    ax_r.axhline(record["options"]["tol"], color="gray", ls="--", label="tol")
    ax_r.set_xlabel("MGRIT iteration")
    ax_r.set_ylabel("residual norm")
    ax_r.set_title("MGRIT convergence")
    ax_r.legend()
    steps = range(len(record["serial"]["losses"]))
    ax_l.semilogy(steps, record["serial"]["losses"], label="serial", lw=3, alpha=0.5)
    kept = record["mgrit"].get("points") or steps  # storage="c-points": the C-points
    ax_l.semilogy(kept, record["mgrit"]["losses"], "--", label="MGRIT")
    ax_l.set_xlabel("training step")
    ax_l.set_ylabel("training loss")
    ax_l.set_title(f"{record['problem']['name']}: loss curves")
    ax_l.legend()
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
