"""``metrics.png``: the validation metrics of a run over its epochs, before ICFRR and after each ICFRR iteration.

One panel per metric (mAP@all, mAP@K, P@K as validated); x = the epoch the validation followed (0 = before the
first step, i.e. the starting weights, when ``eval.at_start``); one line before ICFRR (``base/``), one after the
last iteration (``icfrr/``) and thin lines for the iterations in between (``it<t>/``). Read from ``metrics.csv``,
so the plot of a resumed run covers the whole run. Needs matplotlib (rendered off-screen with the Agg backend).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple, Union

__all__ = ["validation_series", "plot_validation"]


def validation_series(csv_path: Union[str, Path]) -> Dict[str, List[Tuple[int, float]]]:
    """``{metric key: [(epoch, value), ...]}`` of the validation rows of a ``metrics.csv`` (the last value per
    epoch wins, so a validation repeated after a resume is not drawn twice)."""
    from .run_log import RunLog

    series: Dict[str, Dict[int, float]] = {}
    for r in RunLog.read(csv_path):
        if r["phase"] == "val" and "/" in r["metric"]:
            series.setdefault(r["metric"], {})[r["epoch"]] = r["value"]
    return {k: sorted(v.items()) for k, v in series.items()}


def plot_validation(csv_path: Union[str, Path], out: Union[str, Path], title: str = "") -> Path:
    """Draw the validation metrics of ``csv_path`` into the PNG ``out`` (module docstring).

    Raises:
        ValueError: the CSV holds no validation rows.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from icfrr_fast.io import atomic_write

    series = validation_series(csv_path)
    metrics = sorted({k.partition("/")[2] for k in series if k.startswith("base/")},
                     key=lambda m: (not m.startswith("mAP@all"), not m.startswith("mAP"), m))
    if not metrics:
        raise ValueError(f"{csv_path}: no validation rows (phase 'val') to plot")
    iters = sorted({int(k.partition("/")[0][2:]) for k in series if k.startswith("it") and k[2].isdigit()})
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        for t in iters[:-1]:
            pts = series.get(f"it{t}/{m}", [])
            ax.plot([e for e, _ in pts], [v for _, v in pts], color="tab:orange", alpha=0.25, lw=1)
        for key, label, style in ((f"base/{m}", "before ICFRR", dict(color="tab:blue", marker="o")),
                                  (f"icfrr/{m}", f"after ICFRR ({iters[-1] if iters else 0} it.)",
                                   dict(color="tab:orange", marker="s"))):
            pts = series.get(key, [])
            ax.plot([e for e, _ in pts], [v for _, v in pts], label=label, lw=2, **style)
        ax.set_title(m)
        ax.set_xlabel("epoch (0 = before training)")
        ax.grid(alpha=0.3)
        epochs = sorted({e for e, _ in series.get(f"base/{m}", [])})
        if epochs:
            ax.set_xticks(epochs)
    axes[0][0].legend(loc="best", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    try:
        return atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    finally:
        plt.close(fig)
