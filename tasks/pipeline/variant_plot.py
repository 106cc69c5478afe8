"""A variant's own coverage plot for its card: the curves of its languages only (from the
base's plot data), with the variant marked where it sits — its kept vocabulary and the
held-out coverage it measured."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from tasks.engine.atomic import atomic_file
from tasks.pipeline.record import VariantRecord

log = logging.getLogger("trimworks.plot")
# matplotlib is not thread-safe (its mathtext parser is shared): builds run in worker threads.
MATPLOTLIB_LOCK = threading.Lock()


def plot_variant(base_plot_png: Path, rec: VariantRecord, out_png: Path) -> bool:
    """Write `out_png`; False when it cannot (no curve data, or plotting failed: a plot is
    never worth failing a variant) and the caller copies the base plot instead."""
    try:
        with MATPLOTLIB_LOCK:
            return _plot_variant(base_plot_png, rec, out_png)
    except Exception as exc:  # noqa: BLE001
        log.warning("%s: marked coverage plot failed (%s); using the base plot", rec.variant_id, exc)
        return False


def _plot_variant(base_plot_png: Path, rec: VariantRecord, out_png: Path) -> bool:
    data_path = Path(base_plot_png).with_suffix(".json")
    if not data_path.is_file() or rec.vocab_after is None:
        return False
    data = json.loads(data_path.read_text())
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for lang in rec.languages:
        curve = data["curves"].get(lang)
        if curve is None:
            continue
        (line,) = ax.plot(data["sizes"], curve, label=lang)
        f = rec.fidelity.get(lang)
        if f is not None:
            ax.scatter([rec.vocab_after], [100 * f.coverage], marker="o", s=60, color=line.get_color(), zorder=3,
                       edgecolors="black")
    ax.axvline(rec.vocab_after, color="black", linestyle="--", linewidth=1)
    right_half = rec.vocab_after ** 2 > min(data["sizes"]) * max(data["sizes"])  # log scale: label on the roomy side
    ax.annotate(f"this variant: {rec.vocab_after:,} tokens (×{rec.multiple})", (rec.vocab_after, 0.02),
                xycoords=("data", "axes fraction"), xytext=(-4 if right_half else 4, 4), textcoords="offset points",
                fontsize=8, ha="right" if right_half else "left")
    ax.set_xscale("log")
    ax.set_xlabel("kept vocabulary size (tokens)")
    ax.set_ylabel("held-out lines fully covered (%)")
    ax.set_title(f"{rec.variant_id}: coverage vs kept vocabulary (base {data['vocab_size']:,})", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(title="language")
    # Fixed margins for the fixed figure size: tight_layout measured every text box again and
    # was half of this plot's time, inside the lock every build thread shares.
    fig.subplots_adjust(left=0.1, right=0.97, top=0.91, bottom=0.13)
    with atomic_file(out_png) as fh:
        fig.savefig(fh, format="png")
    plt.close(fig)
    return True
