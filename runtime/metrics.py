"""Pure numpy metrics for classifier outputs: softmax, top-k, logit parity and the per-precision tolerances.

Shared by ``pand-export`` (the parity gate that decides ``valid``) and ``pand-bench`` (the same numbers against the
stored PyTorch reference), so both report identical definitions. No torch.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

__all__ = ["softmax", "topk", "ParityResult", "compare_logits", "Tolerance", "TOLERANCES", "check_parity"]


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax: ``p_i = exp(z_i - max z) / sum_j exp(z_j - max z)``; shape preserved."""
    z = logits.astype(np.float64) - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


def topk(scores: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Top-``k`` of ``scores [N, C]``: ``(indices [N, k], values [N, k])``, best first (ties: lower index first)."""
    k = max(1, min(int(k), scores.shape[-1]))
    idx = np.argsort(-scores, axis=-1, kind="stable")[:, :k]
    return idx, np.take_along_axis(scores, idx, axis=-1)


@dataclass
class ParityResult:
    """Agreement of candidate logits with reference logits on the same ``n`` images.

    Attributes:
        max_abs: ``max |out - ref|`` over all elements.
        mean_abs: ``mean |out - ref|``.
        mean_cosine: mean over images of ``<ref_i, out_i> / (|ref_i| |out_i|)``.
        top1_agreement: fraction of images with ``argmax out_i == argmax ref_i``.
        near_tie_flips: disagreements where the reference's own margin ``ref_i[a] - ref_i[b]`` between its top-1
            ``a`` and the candidate's top-1 ``b`` is at most the tie margin (a flip within the logit tolerance).
        acc_ref / acc_out: top-1 accuracy of each against ``labels`` (None without labels).
    """

    n: int
    max_abs: float
    mean_abs: float
    mean_cosine: float
    top1_agreement: float
    near_tie_flips: int = 0
    acc_ref: Optional[float] = None
    acc_out: Optional[float] = None

    @property
    def acc_delta(self) -> Optional[float]:
        """``acc_out - acc_ref`` (negative = the candidate is less accurate)."""
        if self.acc_ref is None or self.acc_out is None:
            return None
        return self.acc_out - self.acc_ref

    @property
    def agreement_excusing_ties(self) -> float:
        """Top-1 agreement counting near-tie flips as agreements."""
        if self.n == 0:
            return 1.0
        return min(1.0, self.top1_agreement + self.near_tie_flips / self.n)

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["acc_delta"] = self.acc_delta
        return d


def compare_logits(ref: np.ndarray, out: np.ndarray, labels: Optional[np.ndarray] = None,
                   tie_margin: float = 0.0) -> ParityResult:
    """Compare candidate logits ``out [N, C]`` with reference logits ``ref [N, C]`` (see :class:`ParityResult`).

    Args:
        ref: reference logits (the PyTorch student), float ``[N, C]``.
        out: candidate logits (ONNX Runtime / TensorRT), same shape.
        labels: optional ground-truth labels ``[N]`` for the accuracies.
        tie_margin: reference margin below which a top-1 flip is reported as a near tie.
    """
    ref = np.asarray(ref, dtype=np.float64)
    out = np.asarray(out, dtype=np.float64)
    if ref.shape != out.shape or ref.ndim != 2:
        raise ValueError(f"logit shapes differ or are not [N, C]: ref {ref.shape} vs out {out.shape}")
    n = ref.shape[0]
    if n == 0:
        return ParityResult(0, 0.0, 0.0, 1.0, 1.0)
    diff = np.abs(out - ref)
    denom = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    cos = np.where(denom > 0, (ref * out).sum(1) / np.maximum(denom, 1e-30), 1.0)
    a, b = ref.argmax(1), out.argmax(1)
    agree = a == b
    margin = ref[np.arange(n), a] - ref[np.arange(n), b]
    ties = int(np.sum(~agree & (margin <= tie_margin)))
    acc_ref = acc_out = None
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        acc_ref, acc_out = float(np.mean(a == labels)), float(np.mean(b == labels))
    return ParityResult(n=n, max_abs=float(diff.max()), mean_abs=float(diff.mean()), mean_cosine=float(cos.mean()),
                        top1_agreement=float(agree.mean()), near_tie_flips=ties, acc_ref=acc_ref, acc_out=acc_out)


@dataclass(frozen=True)
class Tolerance:
    """Pass criteria of one precision; ``None`` disables a criterion.

    fp32 is strict (element-wise max error); fp16 follows Polygraphy's recommended FP16 check (``--check-error-stat
    mean`` with ``atol 1e-2``: the *mean* absolute error, because the max gives false failures in fp16;
    docs/deployment.md, "Parity tolerances"); int8 is judged at task level: top-1 agreement with the fp32
    reference and the accuracy drop.
    """

    max_abs: Optional[float] = None
    mean_abs: Optional[float] = None
    min_cosine: Optional[float] = None
    min_agreement: Optional[float] = None
    max_acc_drop: Optional[float] = None
    tie_margin: float = 0.0  # flips with a smaller reference margin are excused (within the logit tolerance)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


TOLERANCES: Dict[str, Tolerance] = {
    "fp32": Tolerance(max_abs=1e-3, min_cosine=0.99999, min_agreement=1.0, tie_margin=2e-3),
    "fp16": Tolerance(mean_abs=1e-2, min_cosine=0.999, min_agreement=0.99, max_acc_drop=0.01, tie_margin=2e-2),
    "int8": Tolerance(min_agreement=0.99, max_acc_drop=0.02),
}


def check_parity(result: ParityResult, tol: Tolerance) -> List[str]:
    """The failed criteria of ``result`` under ``tol`` as readable strings (empty list = pass)."""
    fails: List[str] = []
    if tol.max_abs is not None and not result.max_abs <= tol.max_abs:
        fails.append(f"max |logit diff| {result.max_abs:.3g} > {tol.max_abs:g}")
    if tol.mean_abs is not None and not result.mean_abs <= tol.mean_abs:
        fails.append(f"mean |logit diff| {result.mean_abs:.3g} > {tol.mean_abs:g}")
    if tol.min_cosine is not None and not result.mean_cosine >= tol.min_cosine:
        fails.append(f"mean cosine {result.mean_cosine:.6f} < {tol.min_cosine:g}")
    if tol.min_agreement is not None:
        agreement = result.agreement_excusing_ties if tol.tie_margin > 0 else result.top1_agreement
        if not agreement >= tol.min_agreement:
            fails.append(f"top-1 agreement {agreement:.2%} < {tol.min_agreement:.2%}")
    if tol.max_acc_drop is not None and result.acc_delta is not None and -result.acc_delta > tol.max_acc_drop + 1e-12:
        fails.append(f"top-1 accuracy drop {-result.acc_delta:.2%} > {tol.max_acc_drop:.2%}")
    return fails
