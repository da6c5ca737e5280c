"""PNG bar chart of a data-path report: every stack's speedup over the baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def ratio_chart(report: dict[str, Any], out: Path) -> bool:
    """Grouped bars, one group per metric, one bar per stack; False if nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ratios = report["ratios"]["vs_baseline"]
    if not ratios:
        return False
    metrics = list(report["metrics"])
    stacks = [s for s in report["stacks"] if s != report["baseline"]]
    fig, ax = plt.subplots(figsize=(max(10, 1.4 * len(metrics)), 5.5))
    width = 0.8 / max(1, len(stacks))
    for i, stack in enumerate(stacks):
        vals = [ratios.get(stack, {}).get(m) or 0 for m in metrics]
        xs = [j + (i - (len(stacks) - 1) / 2) * width for j in range(len(metrics))]
        bars = ax.bar(xs, vals, width, label=stack)
        for x, v in zip(xs, vals):
            if v:
                ax.text(x, v, f"{v:.1f}", ha="center", va="bottom", fontsize=6, rotation=90)
        del bars
    ax.axhline(1.0, color="black", linewidth=1)
    ax.set_yscale("log")
    ax.set_xticks(range(len(metrics)))
    ax.set_xticklabels([m.replace("_", "\n", 1) for m in metrics], fontsize=8)
    ax.set_ylabel(f"speedup vs {report['baseline']} (x, log; >1 better)")
    ax.set_title(
        f"vhba data path, {report['kernel']['abi']}, {report['accel']['name']}, "
        f"{report['options']['reps']} reps, ISO {report['iso']['bytes'] / 1e6:.0f} MB "
        f"({report['timestamp']})",
        fontsize=10,
    )
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True
