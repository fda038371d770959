"""Run logs: ``metrics.csv`` (long format: ``time,epoch,step,phase,metric,value``, appended, so a resumed run keeps
its history) and TensorBoard scalars (``<phase>/<metric>``) in the output folder. Only the main rank writes."""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Dict

__all__ = ["RunLog"]


class RunLog:
    """Append metrics to CSV and (optionally) TensorBoard.

    Args:
        out_dir: the run's output folder.
        tensorboard: also write TensorBoard event files (needs the ``tensorboard`` package).
        enabled: False on non-main ranks (everything becomes a no-op).
    """

    def __init__(self, out_dir, tensorboard: bool = True, enabled: bool = True):
        self.enabled = enabled
        self.path = Path(out_dir) / "metrics.csv"
        self._tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            with open(self.path, "w", newline="") as f:
                csv.writer(f).writerow(["time", "epoch", "step", "phase", "metric", "value"])
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(Path(out_dir) / "tensorboard"))

    def log(self, phase: str, metrics: Dict[str, float], *, step: int, epoch: int) -> None:
        """Write ``metrics`` (numbers only) of ``phase`` ("train", "val", ...) at ``step``."""
        if not self.enabled:
            return
        now = f"{time.time():.3f}"
        with open(self.path, "a", newline="") as f:
            w = csv.writer(f)
            for k, v in metrics.items():
                if isinstance(v, (int, float)):
                    w.writerow([now, epoch, step, phase, k, repr(float(v))])
                    if self._tb is not None:
                        self._tb.add_scalar(f"{phase}/{k}", float(v), step)
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    @staticmethod
    def read(path) -> list:
        """Rows of a metrics.csv as dicts (value as float)."""
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        for r in rows:
            r["value"] = float(r["value"])
            r["step"], r["epoch"] = int(r["step"]), int(r["epoch"])
        return rows


