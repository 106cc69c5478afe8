"""A variant's own coverage plot for its card: the curves of its languages only (from the
base's plot data), with the variant marked where it sits — its kept vocabulary and the
held-out coverage it measured.

Every variant of a base and language subset shares the same curves, axes, grid and legend;
only the marker, its label and the title differ. That shared part is drawn once and
remembered as pixels (matplotlib's blitting), and each variant draws only its own artists
over a copy: a full draw cost ~0.5 s of Python under the lock every build thread shares,
the marked copy ~30 ms."""

from __future__ import annotations

import collections
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.engine.runtime.atomic import atomic_file
from tasks.pipeline.report.record import VariantRecord

log = logging.getLogger("trimworks.plot")
# matplotlib is not thread-safe (its mathtext parser is shared): builds run in worker threads.
MATPLOTLIB_LOCK = threading.Lock()
_BACKGROUNDS: collections.OrderedDict[tuple, "_Background"] = collections.OrderedDict()  # under the lock
_KEEP_BACKGROUNDS = 8  # one per base x language subset in flight; ~1.5 MB of pixels each
# Series styles: ten colours (tab10) times eight markers and four line styles, so that up to 80
# languages on one plot differ in colour or marker; each style is the language's, not the slot's.
_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_LINESTYLES = ("-", "--", ":", "-.")


def series_style(i: int) -> dict[str, str]:
    """The i-th series' colour, marker and line style: colour cycles fastest, then marker and
    line style, so neighbours in the legend differ in colour and every ten share none of the rest."""
    return {"color": _COLORS[i % len(_COLORS)], "marker": _MARKERS[(i // len(_COLORS)) % len(_MARKERS)],
            "linestyle": _LINESTYLES[(i // len(_COLORS)) % len(_LINESTYLES)]}


def legend_outside(ax: Any, title: str, n: int) -> Any:
    """The legend right of the axes, never over the data; two columns beyond 18 entries."""
    return ax.legend(title=title, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=8,
                     title_fontsize=8, ncol=1 if n <= 18 else 2 if n <= 40 else 3)


def plot_variant(base_plot_png: Path, rec: VariantRecord, out_png: Path) -> bool:
    """Write `out_png`; False when it cannot (no curve data, or plotting failed: a plot is
    never worth failing a variant) and the caller copies the base plot instead."""
    try:
        with MATPLOTLIB_LOCK:
            return _plot_variant(base_plot_png, rec, out_png)
    except Exception as exc:  # noqa: BLE001
        log.warning("%s: marked coverage plot failed (%s); using the base plot", rec.variant_id, exc)
        return False


@dataclass
class _Background:
    fig: Any
    ax: Any
    colors: dict[str, str]
    pixels: Any  # the canvas region saved after the full draw


def _background(data_path: Path, data: dict, languages: tuple[str, ...], xlim: tuple[float, float]) -> _Background | None:
    """The shared part of the plot for these languages (`data`: the file's curves), drawn
    once per data file state."""
    key = (str(data_path), data_path.stat().st_mtime_ns, languages, xlim)
    hit = _BACKGROUNDS.get(key)
    if hit is not None:
        _BACKGROUNDS.move_to_end(key)
        return hit
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.4, 4.2), dpi=110)
    colors = {}
    for i, lang in enumerate(languages):
        curve = data["curves"].get(lang)
        if curve is not None:
            style = series_style(i)
            (line,) = ax.plot(data["sizes"], curve, label=lang, color=style["color"], linestyle=style["linestyle"])
            colors[lang] = line.get_color()
    if not colors:
        plt.close(fig)
        return None
    ax.set_xscale("log")
    ax.set_xlim(*xlim)
    ax.set_ylim(*ax.get_ylim())  # frozen: the markers drawn later must not rescale the axes
    ax.set_xlabel("kept vocabulary size (tokens)")
    ax.set_ylabel("held-out lines fully covered (%)")
    ax.grid(True, which="both", alpha=0.3)
    legend_outside(ax, "language", len(colors))
    ax.set_title(" ", fontsize=10)  # the variant's title is drawn per variant
    # Fixed margins for the fixed figure size (tight_layout measures every text box again);
    # the right one leaves room for the legend beside the axes.
    fig.subplots_adjust(left=0.085, right=0.78 if len(colors) <= 18 else 0.68, top=0.91, bottom=0.13)
    fig.canvas.draw()
    bg = _Background(fig, ax, colors, fig.canvas.copy_from_bbox(fig.bbox))
    _BACKGROUNDS[key] = bg
    while len(_BACKGROUNDS) > _KEEP_BACKGROUNDS:
        plt.close(_BACKGROUNDS.popitem(last=False)[1].fig)
    return bg


def _plot_variant(base_plot_png: Path, rec: VariantRecord, out_png: Path) -> bool:
    data_path = Path(base_plot_png).with_suffix(".json")
    if not data_path.is_file() or rec.vocab_after is None:
        return False
    data = json.loads(data_path.read_text())
    sizes = data["sizes"]
    # The curves' own range, widened (log-scale margins) to hold this variant when it lies outside.
    lo, hi = min(min(sizes), rec.vocab_after), max(max(sizes), rec.vocab_after)
    xlim = (lo / (hi / lo) ** 0.05, hi * (hi / lo) ** 0.05)
    bg = _background(data_path, data, tuple(rec.languages), xlim)
    if bg is None:
        return False
    fig, ax = bg.fig, bg.ax
    artists = []
    for lang, color in bg.colors.items():
        f = rec.fidelity.get(lang)
        if f is not None:
            artists.append(ax.scatter([rec.vocab_after], [100 * f.coverage], marker="o", s=60, color=color, zorder=3,
                                      edgecolors="black"))
    artists.append(ax.axvline(rec.vocab_after, color="black", linestyle="--", linewidth=1))
    right_half = rec.vocab_after ** 2 > min(sizes) * max(sizes)  # log scale: label on the roomy side
    artists.append(ax.annotate(f"this variant: {rec.vocab_after:,} tokens (×{rec.multiple})", (rec.vocab_after, 0.02),
                               xycoords=("data", "axes fraction"), xytext=(-4 if right_half else 4, 4),
                               textcoords="offset points", fontsize=8, ha="right" if right_half else "left"))
    artists.append(ax.text(0.5, 1.0, f"{rec.variant_id}: coverage vs kept vocabulary (base {data['vocab_size']:,})",
                           transform=ax.transAxes, ha="center", va="baseline", fontsize=10,
                           transform_rotates_text=False))
    artists[-1].set_position((0.5, 1.0 + 6 / (ax.bbox.height or 1)))  # where matplotlib puts a title (6 pt pad)
    try:
        fig.canvas.restore_region(bg.pixels)
        for artist in artists:
            artist.set_clip_on(artist is not artists[-1])
            ax.draw_artist(artist)
        from PIL import Image

        image = Image.frombuffer("RGBA", fig.canvas.get_width_height(), fig.canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
        with atomic_file(out_png) as fh:
            image.save(fh, format="png")
    finally:
        for artist in artists:
            artist.remove()
    return True
