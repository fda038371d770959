"""The ICFRR parameters as one value: :class:`ICFRRParams`, its defaults and its checks, in one place.

``icfrr``, ``ICFRRIndex.search``, ``FaissICFRR.search`` and ``DistributedICFRRIndex.search`` build one from their
keyword arguments and hand it on; the ops take its fields as keyword arguments (``**params.op_kwargs()``). Rules
that need the gallery (k_g <= G - 1, depth <= G) are checked where G is known, by the op validators in
``icfrr_fast.ops``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ._checks import MAX_INT64, MAX_ITERS, check_beta, check_bool, check_int

#: the two ways the re-ranked key is formed (docs/design.md §2): "reference" (the released code: the item at position
#: p gets v_p + beta * delta, v the initial scores sorted best first) and "paper" (s <- s + beta * delta)
SEMANTICS = ("reference", "paper")


def check_icfrr_values(k_q, beta, iters, semantics, early_stop) -> float:
    """The gallery-free rules of the ICFRR parameters; returns beta as a float.

    k_q an int >= 1, beta finite and >= 0, iters an int in [0, 2^31 - 1], semantics one of :data:`SEMANTICS`,
    early_stop a bool.
    """
    check_int("k_q", k_q, 1, MAX_INT64)
    beta = check_beta(beta)
    check_int("iters", iters, 0, MAX_ITERS)
    torch._check_type(isinstance(semantics, str), lambda: f"semantics must be a str; got {type(semantics).__name__}")
    torch._check_value(semantics in SEMANTICS, lambda: f"semantics must be one of {SEMANTICS}; got {semantics!r}")
    check_bool("early_stop", early_stop)
    return beta


@dataclass(frozen=True)
class ICFRRParams:
    """The parameters of ICFRR re-ranking (Cross-domain re-ranking, docs/design.md §2), checked once on construction.

    For T = ``iters`` iterations the first ``K_q' = min(k_q, L)`` items of the current order vote; item j gets
    ``delta_j = mean over voters i of alpha(rank of j in N_i)``, ``alpha(r) = 1 - r / (G - 1)``, with N_i the
    first ``k_g`` gallery neighbours of voter i; the key is ``v_p + beta * delta`` ("reference") or
    ``s + beta * delta`` ("paper").

    Attributes:
        k_g: neighbours per gallery item used for voting, in [1, G - 1] (checked against the gallery); None: the
            caller's default (all its graph holds).
        k_q: voters per iteration, >= 1 (clipped to L).
        beta: vote weight, finite and >= 0 (stored as a float).
        iters: iterations T >= 0 (0 returns the initial ranking).
        semantics: "reference" or "paper".
        depth: L, candidates per query re-ranked, in [1, G] (checked against the gallery); None: the caller's
            default.
        early_stop: stop a query once an iteration leaves its voter set unchanged.

    Raises:
        TypeError / ValueError: a field of the wrong type or out of range, named in the message.
    """

    k_g: Optional[int] = None
    k_q: int = 250
    beta: float = 0.5
    iters: int = 5
    semantics: str = "reference"
    depth: Optional[int] = None
    early_stop: bool = False

    def __post_init__(self) -> None:
        for name in ("k_g", "depth"):  # their ranges need G: checked against the gallery (check_k_g, the op)
            v = getattr(self, name)
            torch._check_type(v is None or (isinstance(v, int) and not isinstance(v, bool)),
                              lambda: f"{name} must be an int or None; got {type(v).__name__}")
        object.__setattr__(self, "beta",
                           check_icfrr_values(self.k_q, self.beta, self.iters, self.semantics, self.early_stop))

    def op_kwargs(self) -> dict:
        """k_q, beta, iters, semantics and early_stop as keyword arguments of ``icfrr_rerank`` /
        ``icfrr_candidates`` (and their validators and reference oracles)."""
        return dict(k_q=self.k_q, beta=self.beta, iters=self.iters, semantics=self.semantics,
                    early_stop=self.early_stop)
