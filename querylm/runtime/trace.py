"""The probability trace of a run: for each generated token, how sure the model was and what the
constraints took away (the per-step distribution is the model's "degrees of freedom")."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class TraceStep:
    hole: str
    token: str
    """The chosen token's text ("" when the value ended here)."""
    prob: float
    """The chosen token's probability under the model, before masking (for an end: the end mass)."""
    entropy: float
    """Entropy (nats) of the model's unmasked next-token distribution."""
    masked_mass: float
    """Probability the constraints removed: the mass of the tokens they did not allow."""
    top: list[tuple[str, float]] = field(default_factory=list)
    """The most likely tokens under the unmasked distribution, with their probabilities."""


class Tracer:
    """A chooser that records each step, then lets the real chooser choose (so tracing changes
    nothing about the result)."""

    def __init__(self, inner: Any, backend: Any, top_k: int = 5):
        self.inner = inner
        self.decode = backend.decode
        self.eos = np.asarray(backend.eos_ids)
        self.top_k = top_k
        self.steps: list[TraceStep] = []
        self.hole = ""

    def choose(self, logits: np.ndarray, allowed: Any, end: Any = None) -> int:
        """``allowed``: ids or a TokenSet; ``end``: None, the logit of ending, or the ending tokens."""
        token = self.inner.choose(logits, allowed, end)
        ids = np.asarray(getattr(allowed, "ids", allowed))
        x = logits.astype(np.float64)
        top = x.max()
        p = np.exp(x - top)
        z = p.sum()
        p /= z
        if end is None:
            end_mass = None
        elif isinstance(end, np.ndarray):
            end_mass = float(p[end].sum())
        else:
            end_mass = float(np.exp(end - top) / z)
        may = ids if end is None else np.concatenate([ids, self.eos])
        self.step(p, may, token, end_mass)
        return token

    def step(self, p: np.ndarray, allowed: np.ndarray, token: int, end_mass: float | None) -> None:
        allowed_mass = float(p[allowed].sum()) if allowed.size else 0.0
        nz = p[p > 0]
        top = np.argpartition(-p, self.top_k)[: self.top_k]
        top = top[np.argsort(-p[top])]
        self.steps.append(
            TraceStep(
                hole=self.hole,
                token=self.decode([token]) if token >= 0 else "",  # type: ignore[operator]
                prob=float(p[token]) if token >= 0 else float(end_mass or 0.0),
                entropy=float(-(nz * np.log(nz)).sum()),
                masked_mass=max(0.0, 1.0 - allowed_mass),
                top=[(self.decode([int(t)]), float(p[t])) for t in top],  # type: ignore[operator]
            )
        )

    def to_json(self) -> list[dict[str, object]]:
        return [asdict(s) for s in self.steps]


def save(steps: list[TraceStep], path: str | Path, title: str = "") -> None:
    """``.json``: the data; any image suffix: a plot (needs matplotlib)."""
    path = Path(path)
    if path.suffix == ".json":
        path.write_text(json.dumps([asdict(s) for s in steps], ensure_ascii=False, indent=1))
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(steps)
    xs = np.arange(n)
    fig, ax = plt.subplots(figsize=(max(8.0, 0.32 * n + 2), 4.2))
    ax.fill_between(
        xs,
        0,
        [s.masked_mass for s in steps],
        step="mid",
        color="tab:red",
        alpha=0.25,
        label="mass removed by constraints",
    )
    ax.plot(xs, [s.prob for s in steps], "o-", color="tab:blue", ms=3, label="P(chosen token)")
    ax2 = ax.twinx()
    ax2.plot(xs, [s.entropy for s in steps], "-", color="tab:green", label="entropy (nats)")
    ax2.set_ylabel("entropy (nats)", color="tab:green")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("probability")
    labels = [repr(s.token)[1:-1] if s.token else "<end>" for s in steps]
    ax.set_xticks(xs, labels, rotation=70, fontsize=7, family="monospace")
    holes = [s.hole for s in steps]
    for i in range(1, n):
        if holes[i] != holes[i - 1]:
            ax.axvline(i - 0.5, color="grey", lw=0.6, ls=":")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper right", fontsize=7)
    ax.set_title(title or "probability trace", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
