"""The report's figures (matplotlib, PNG). One colour per variant across every figure; PNGs carry no timestamp or
version metadata, so the same data gives byte-identical files.

Every figure shows its data: the axes are scaled to the runs that trained, perplexities on a log axis, and a run
that diverged or failed to learn is drawn as a marked point (×) at its last step, on the edge of the axes when its
value lies beyond them, instead of stretching the axes until the other runs flatten into a line. A study of three
or more factors draws its curves as small multiples (`panels`): one panel per setting of all factors but the first,
whose values are the lines within each panel. No two pieces of text overlap (`overlapping_texts` checks).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import ticker, transforms  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from tasks.record.outcome import DIVERGED, FAILED_TO_LEARN, TRAINED, WORDS  # noqa: E402

STYLE = {
    "figure.figsize": (7.5, 4.2),
    "figure.dpi": 100,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.fontsize": 8,
    "axes.titlesize": 11,
    "font.size": 9,
}
FAILED_MARKER = {
    "marker": "X",
    "markersize": 9,
    "markeredgecolor": "black",
    "markeredgewidth": 0.6,
    "linestyle": "none",
    "clip_on": False,
    "zorder": 5,
}


def colours(variants: list[str]) -> dict[str, tuple]:
    palette = plt.get_cmap("tab10" if len(variants) <= 10 else "tab20")
    return {v: palette(i % palette.N) for i, v in enumerate(variants)}


def factor_colours(factors: list[str]) -> dict[str, tuple]:
    """A colour per factor, from a palette of its own (Dark2): no factor looks like a variant (tab10)."""
    palette = plt.get_cmap("Dark2")
    return {f: palette(i % palette.N) for i, f in enumerate(factors)}


def save(fig: plt.Figure, path: Path) -> Path:
    if fig.get_layout_engine() is None:  # a figure of panels lays itself out (constrained layout)
        fig.tight_layout()
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    fig.savefig(
        path,
        format="png",
        metadata={"Software": None},
        bbox_inches="tight",
        bbox_extra_artists=fig.get_default_bbox_extra_artists() + legends,
    )  # a legend below the axes is taken into the image, and every text of the figure (titles, notes)
    plt.close(fig)
    return path


def legend(ax: plt.Axes) -> None:
    """Inside the axes for a few entries; below them, in two columns, for more (they would cover the data)."""
    entries = len(ax.get_legend_handles_labels()[1])
    if entries <= 4:
        ax.legend(loc="best")
    else:
        below = ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
        below.set_in_layout(False)  # the axes keep their size; the saved image grows to take the legend in


@dataclass(frozen=True)
class Panels:
    """Small multiples: the variants each panel draws, on a grid of `rows` × `columns` panels keyed (row, column),
    and each panel's title (the setting it holds fixed). One panel with every variant, untitled, for a study of
    fewer than three factors."""

    rows: int
    columns: int
    variants: dict[tuple[int, int], list[str]]
    titles: dict[tuple[int, int], str]

    @property
    def single(self) -> bool:
        return self.rows == self.columns == 1


def one_panel(variants: list[str]) -> Panels:
    return Panels(1, 1, {(0, 0): list(variants)}, {(0, 0): ""})


def panels(settings: dict[str, dict[str, Any]], factors: dict[str, list[Any]]) -> Panels:
    """The small multiples of a study: `settings` gives each variant's value of each factor, `factors` each factor's
    values in the grid's order. With three or more factors the first one's values are the lines within a panel,
    the second's values the rows and the others' combinations the columns, so each panel compares the first factor
    at one setting of all the others; with fewer, one panel."""
    keys = list(factors)
    if len(keys) < 3:
        return one_panel(list(settings))
    rows, columns = factors[keys[1]], list(itertools.product(*(factors[k] for k in keys[2:])))
    variants, titles = {}, {}
    for (r, row), (c, column) in itertools.product(enumerate(rows), enumerate(columns)):
        fixed = dict(zip(keys[1:], (row, *column)))
        variants[(r, c)] = [v for v, s in settings.items() if all(s.get(k) == x for k, x in fixed.items())]
        titles[(r, c)] = ", ".join(f"{k.rpartition('.')[2]}={x}" for k, x in fixed.items())
    if sum(len(v) for v in variants.values()) != len(settings):  # a variant in no panel is drawn in one with all
        return one_panel(list(settings))
    return Panels(len(rows), len(columns), variants, titles)


def panel_figure(layout: Panels) -> tuple[plt.Figure, dict[tuple[int, int], plt.Axes]]:
    """One axes for one panel; a grid of axes sharing both scales for several, each titled with its setting (a
    panel with no variant, all excluded, says so)."""
    if layout.single:
        fig, ax = plt.subplots()
        return fig, {(0, 0): ax}
    fig, grid = plt.subplots(
        layout.rows,
        layout.columns,
        figsize=(max(7.5, 3.3 * layout.columns), 1.2 + 2.6 * layout.rows),
        sharex=True,
        sharey=True,
        squeeze=False,
        layout="constrained",
    )
    axes = {(r, c): grid[r, c] for r in range(layout.rows) for c in range(layout.columns)}
    for key, ax in axes.items():
        ax.set_title(layout.titles[key], loc="left", fontsize=9, pad=10)
        if not layout.variants[key]:
            ax.text(0.5, 0.5, "no cell: excluded", transform=ax.transAxes, ha="center", color="0.4")
    return fig, axes


def panel_legend(
    fig: plt.Figure, axes: dict[tuple[int, int], plt.Axes], title: str, note: str, variants: list[str]
) -> None:
    """The figure's title, and one legend for all panels below them, headed by the note on how to read them: the
    variants' entries in `variants`' order (panel by panel), then the lines drawn in every panel (a floor), once."""
    entries: dict[str, Any] = {}
    for ax in axes.values():
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)

    def place(label: str) -> int:
        return next(
            (i for i, v in enumerate(variants) if label.startswith(f"{v}:") or label.startswith(f"{v} ")), len(variants)
        )

    entries = dict(sorted(entries.items(), key=lambda item: place(item[0])))
    fig.suptitle(title, x=0.01, ha="left", fontsize=11)
    longest = max((len(label) for label in entries), default=1)  # characters; ~0.07 in each at 8 pt
    fig.legend(
        list(entries.values()),
        list(entries),
        loc="outside lower center",
        ncol=max(1, min(3, int(fig.get_figwidth() / (0.07 * longest + 0.5)))),
        frameon=False,
        title=note,
        title_fontsize=7,
    )


def drawn_texts(fig: plt.Figure) -> list[Text]:
    """Every piece of text the figure shows: titles, labels, annotations, legend entries, and the tick labels of
    the ticks inside each axes' limits (matplotlib keeps others that it does not draw)."""
    fig.canvas.draw()
    ticks, shown = set(), []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                ticks.update({id(tick.label1), id(tick.label2)})
                inside = low - 1e-9 * (high - low) <= tick.get_loc() <= high + 1e-9 * (high - low)
                shown += [t for t in (tick.label1, tick.label2) if inside and t.get_visible() and tick.get_visible()]
    shown += [t for t in fig.findobj(Text) if id(t) not in ticks and t.get_visible()]
    return [t for t in dict.fromkeys(shown) if t.get_text().strip()]


def overlapping_texts(fig: plt.Figure, among: list[Text] | None = None) -> list[tuple[str, str]]:
    """The pairs of texts (of `among`, by default all that the figure shows) whose boxes, as the renderer draws
    them, overlap."""
    texts = among if among is not None else drawn_texts(fig)
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in texts]
    return [
        (texts[i].get_text(), texts[j].get_text())
        for i, j in itertools.combinations(range(len(texts)), 2)
        if boxes[i].overlaps(boxes[j])
    ]


def log_axis(values: list[float], log: bool) -> bool:
    """A log axis for a log-scale metric whose values span more than an order of magnitude; else a linear one,
    on which a few percent between runs stay readable."""
    x = [v for v in values if math.isfinite(v) and v > 0]
    return log and len(x) > 1 and max(x) / min(x) > 10


def limits(values: list[float], log: bool, pad: float = 0.08) -> tuple[float, float] | None:
    """Axis limits around the finite values (positive ones on a log axis), with a margin."""
    x = np.asarray([v for v in values if math.isfinite(v) and (v > 0 or not log)], dtype=float)
    if not len(x):
        return None
    low, high = x.min(), x.max()
    if log:
        span = max(math.log10(high / low), 0.1)
        return low / 10 ** (pad * span), high * 10 ** (pad * span)
    span = max(high - low, abs(high) * 0.05, 1e-9)
    return low - pad * span, high + pad * span


def mark_beyond(
    ax: plt.Axes,
    ended: list[tuple[int, float | None]],
    lim: tuple[float, float],
    colour: tuple,
    label: str,
    taken: dict[tuple[int, float], int],
) -> None:
    """Runs of one variant that did not train: a × at each one's (step, last value); on the axes' edge when that
    value lies beyond the limits chosen for the runs that trained (a non-finite one on the top edge), where the
    legend entry gives the values (written on the axes, they would pile up on each other). A run stopped before its
    first validation (value None) has its × on the top edge at the step where it stopped, and the legend says so.
    Variants whose × fall on the same point are set side by side (`taken` counts the variants already drawn at each
    point)."""
    beyond, unvalidated = [], 0
    drawn: set[tuple[int, float]] = set()
    for i, (step, y) in enumerate(ended):
        shown = lim[1] if y is None or not math.isfinite(y) else min(max(y, lim[0]), lim[1])
        if (step, shown) not in drawn:
            drawn.add((step, shown))
            taken[(step, shown)] = taken.get((step, shown), -1) + 1
        beside = transforms.offset_copy(ax.transData, fig=ax.figure, x=9 * taken[(step, shown)], units="points")
        ax.plot([step], [shown], color=colour, label=label if i == 0 else None, transform=beside, **FAILED_MARKER)
        if y is None:
            unvalidated += 1
        elif shown != y:
            beyond.append(y)
    notes = []
    if beyond:
        low, high = min(beyond), max(beyond)
        notes.append(f"off the axes at {low:.2g}" if low == high else f"off the axes at {low:.2g} to {high:.2g}")
    if unvalidated:
        notes.append(
            "stopped before its first validation"
            if unvalidated == len(ended) == 1
            else f"{unvalidated} stopped before their first validation"
        )
    if notes:
        ax.get_lines()[-len(ended)].set_label(f"{label} ({'; '.join(notes)})")


def draw_floor(ax: plt.Axes, floor: float | None) -> None:
    """The unigram model's perplexity as a dashed line: a run on or above it learned nothing (tasks/data/unigram.py)."""
    if floor is not None:
        ax.axhline(floor, color="0.25", linestyle="--", linewidth=1.1, label=f"unigram model (floor): {floor:,.1f}")


def finish(
    fig: plt.Figure,
    axes: dict[tuple[int, int], plt.Axes],
    layout: Panels,
    title: str,
    note: str,
    xlabel: str,
    ylabel: str,
    path: Path,
) -> Path:
    """Titles, labels and the legend, for one panel (the title left, the note right, above the axes) or for small
    multiples (one title, the axis labels and one legend for the figure); then saved."""
    if layout.single:
        ax = axes[(0, 0)]
        ax.set(xlabel=xlabel, ylabel=ylabel)
        ax.set_title(title, loc="left", pad=12)  # above the × on the top edge
        ax.set_title(note, loc="right", fontsize=7, color="0.35")
        legend(ax)
    else:
        for (r, _), ax in axes.items():
            ax.set_xlabel(xlabel if r == layout.rows - 1 else "")
        fig.supylabel(ylabel, fontsize=9)
        panel_legend(fig, axes, title, note, [v for key in sorted(layout.variants) for v in layout.variants[key]])
    return save(fig, path)


def metric_curves(
    curves: dict[str, list[tuple[str, pd.Series]]],
    stops: dict[str, list[tuple[str, int]]],
    metric: str,
    log: bool,
    colour: dict[str, tuple],
    path: Path,
    floor: float | None = None,
    layout: Panels | None = None,
) -> Path:
    """The validation metric vs step. `curves`: per variant, (outcome, series by step) per run; `stops`: per variant,
    (outcome, step) for runs that stopped before any validation. Runs that trained: the mean over seeds (geometric for
    perplexities), band min–max. The others: one × each at their last point. `floor`: the unigram model's score.
    `layout`: the small multiples (one panel by default), all panels on the same axes."""
    layout = layout or one_panel(list(curves))
    with plt.rc_context(STYLE):
        fig, axes = panel_figure(layout)
        values = [v for runs in curves.values() for o, s in runs if o == TRAINED for v in s] or [
            v for runs in curves.values() for _, s in runs for v in s
        ]
        values += [floor] if floor is not None else []
        log = log_axis(values, log)
        lim = limits(values, log) or (1.0, 10.0)
        steps = [s for runs in curves.values() for _, c in runs for s in c.index]
        marked = False
        for key, ax in axes.items():
            taken: dict[tuple[int, float], int] = {}
            for variant in layout.variants[key]:
                runs = curves.get(variant, [])
                good = [s for o, s in runs if o == TRAINED and len(s)]
                if good:
                    frame = pd.concat(good, axis=1, join="inner").sort_index()
                    middle = np.exp(np.log(frame).mean(axis=1)) if log else frame.mean(axis=1)
                    ax.plot(
                        frame.index,
                        middle,
                        color=colour[variant],
                        marker="o",
                        markersize=3,
                        label=f"{variant} (trained: {len(good)})",
                    )
                    if len(good) > 1:
                        ax.fill_between(
                            frame.index,
                            frame.min(axis=1),
                            frame.max(axis=1),
                            color=colour[variant],
                            alpha=0.2,
                            linewidth=0,
                        )
                ended = [(o, int(s.index[-1]), float(s.iloc[-1])) for o, s in runs if o != TRAINED and len(s)]
                ended += [(o, step, None) for o, step in stops.get(variant, [])]
                if ended:
                    how = ", ".join(dict.fromkeys(WORDS[o] for o, _, _ in ended))
                    mark_beyond(
                        ax, [(step, y) for _, step, y in ended], lim, colour[variant], f"{variant}: {how}", taken
                    )
            draw_floor(ax, floor)
            steps += [step for step, _ in taken]
            marked = marked or bool(taken)
        for ax in axes.values():
            if log:
                ax.set_yscale("log")
            ax.set_ylim(*lim)
            if steps:  # the × are drawn shifted, which autoscaling ignores: take their steps in by hand
                span = max(max(steps) - min(steps), 1)
                ax.set_xlim(min(steps) - 0.04 * span, max(steps) + 0.06 * span)
        note = f"line: {'geometric ' if log else ''}mean of the seeds that trained, band: min–max" + (
            "\n×: a run that did not train, at its last validation (or where it stopped)" if marked else ""
        )
        return finish(fig, axes, layout, f"{metric} during training", note, "training step", metric, path)


def binned_band(curves: list[pd.Series], points: int) -> tuple[np.ndarray, ...]:
    """Runs' per-step curves (indexed by step) binned to at most `points` steps: each bin's median step, the mean over
    runs of each run's median in the bin, and the band's low and high (min and max of any run in the bin)."""
    frame = pd.concat(curves, axis=1).sort_index()
    bins = np.arange(len(frame)) // max(1, math.ceil(len(frame) / points))
    binned = frame.groupby(bins)
    steps = frame.index.to_series().groupby(bins).median().to_numpy()
    return (
        steps,
        binned.median().mean(axis=1).to_numpy(),
        binned.min().min(axis=1).to_numpy(),
        binned.max().max(axis=1).to_numpy(),
    )


def gradient_norms(
    histories: dict[str, list[pd.Series]],
    thresholds: dict[str, float | None],
    colour: dict[str, tuple],
    path: Path,
    points: int = 300,
    layout: Panels | None = None,
) -> Path:
    """Pre-clip total gradient norm vs step, log scale: per variant the geometric mean over seeds (binned to at most
    `points` steps, median per bin), band min–max; the clipping threshold dashed in the variant's colour.
    `layout`: the small multiples (one panel by default)."""
    layout = layout or one_panel(list(histories))
    with plt.rc_context(STYLE):
        fig, axes = panel_figure(layout)
        for key, ax in axes.items():
            for variant in layout.variants[key]:
                finite = [c[np.isfinite(c) & (c > 0)] for c in histories.get(variant, [])]
                finite = [c for c in finite if len(c)]
                if not finite:
                    continue
                steps, mean, low, high = binned_band([np.log10(c) for c in finite], points)
                ax.plot(steps, 10**mean, color=colour[variant], label=variant, linewidth=1.2)
                ax.fill_between(steps, 10**low, 10**high, color=colour[variant], alpha=0.15, linewidth=0)
            # one line per threshold, not per variant
            for threshold in sorted({thresholds.get(v) for v in layout.variants[key] if thresholds.get(v)}):
                ax.axhline(
                    threshold, color="0.3", linestyle="--", linewidth=1, label=f"clipping threshold {threshold:g}"
                )
            if ax.has_data():
                ax.set_yscale("log")
        return finish(
            fig,
            axes,
            layout,
            "pre-clip gradient norm",
            "line: geometric mean over seeds, band: min–max",
            "training step",
            "total gradient norm before clipping",
            path,
        )


def training_losses(
    histories: dict[str, list[tuple[str, pd.Series]]],
    colour: dict[str, tuple],
    path: Path,
    uniform: float | None = None,
    floor: float | None = None,
    points: int = 300,
    layout: Panels | None = None,
) -> Path:
    """The training loss (nats per token) vs step, every step as logged. Per variant, the runs that ran their budget
    (trained, solid; failed to learn, dashed): the mean over seeds (binned to at most `points` steps, median per
    bin), band min–max. Each run that diverged: a thin line of its own to where it stopped (a mean over losses that
    blow up at different steps would describe no run). The axis ends a little above `uniform` (the loss of a uniform
    guess over the vocabulary), so a run that blew up leaves through the top instead of flattening the others;
    `floor`, the log of the unigram model's validation perplexity, is drawn dashed as the level to get below.
    `layout`: the small multiples (one panel by default)."""
    layout = layout or one_panel(list(histories))
    ended = {o for runs in histories.values() for o, s in runs if len(s)}
    with plt.rc_context(STYLE):
        fig, axes = panel_figure(layout)
        shown: list[float] = []
        for key, ax in axes.items():
            for variant in layout.variants[key]:
                runs = [(o, s[np.isfinite(s)]) for o, s in histories.get(variant, [])]
                for outcome, style in ((TRAINED, "-"), (FAILED_TO_LEARN, "--")):
                    mine = [s for o, s in runs if o == outcome and len(s)]
                    if mine:
                        steps, mean, low, high = binned_band(mine, points)
                        ax.plot(
                            steps,
                            mean,
                            color=colour[variant],
                            linewidth=1.2,
                            linestyle=style,
                            label=f"{variant} ({WORDS[outcome]}: {len(mine)})",
                        )
                        ax.fill_between(steps, low, high, color=colour[variant], alpha=0.15, linewidth=0)
                        shown += [*low, *high]
                others = [(o, s) for o, s in runs if o not in (TRAINED, FAILED_TO_LEARN) and len(s)]
                for i, (_, s) in enumerate(others):
                    how = ", ".join(
                        f"{WORDS[o]} {sum(x == o for x, _ in others)}" for o in dict.fromkeys(o for o, _ in others)
                    )
                    ends = sorted({int(r.index[-1]) + 1 for _, r in others})  # the loss of step n is logged at n - 1
                    after = f"{ends[0]}" if len(ends) == 1 else f"{ends[0]}–{ends[-1]}"
                    ax.plot(
                        s.index,
                        s.to_numpy(),
                        color=colour[variant],
                        linewidth=0.8,
                        alpha=0.8,
                        label=f"{variant}: {how}, ended after {after} steps (a line each)" if i == 0 else None,
                    )
                    shown += [float(s.iloc[0])]
            if uniform is not None:
                ax.axhline(
                    uniform, color="0.55", linestyle=":", linewidth=1, label=f"uniform guess: ln V = {uniform:.2f}"
                )
            if floor is not None:
                ax.axhline(
                    floor,
                    color="0.3",
                    linestyle="--",
                    linewidth=1,
                    label=f"unigram model (floor): ln {math.exp(floor):.1f} = {floor:.2f}",
                )
        shown += [v for v in (uniform, floor) if v is not None]
        if shown:
            low, high = min(shown), max(shown)
            top = uniform * 1.15 if uniform is not None else high
            for ax in axes.values():
                ax.set_ylim(low - 0.05 * (top - low), top)
        return finish(
            fig,
            axes,
            layout,
            "training loss",
            "line: mean over the seeds"
            + (" (solid: trained, dashed: failed to learn)" if FAILED_TO_LEARN in ended else "")
            + ", band: min–max"
            + ("\nthin lines: a run that diverged, each" if DIVERGED in ended else ""),
            "training step",
            "training loss (nats per token)",
            path,
        )


def fit_columns(fig: plt.Figure, ax: plt.Axes, texts: list[Text], widest: float = 60.0) -> None:
    """Widen the figure until no two of `texts` (a column's labels: its tick label and the words above it)
    overlap: the columns are spaced by the figure's width, so each try scales it by how much the worst pair lacks,
    and the renderer checks again."""
    for _ in range(8):
        clashes = overlapping_texts(fig, texts)
        width = fig.get_figwidth()
        if not clashes or width >= widest:
            return
        renderer = fig.canvas.get_renderer()
        boxes = [t.get_window_extent(renderer) for t in texts]
        need = max(
            (a.width + b.width) / 2 / max(abs((a.x0 + a.x1) - (b.x0 + b.x1)) / 2, 1.0)
            for i, a in enumerate(boxes)
            for b in boxes[i + 1 :]
            if a.overlaps(b)
        )
        fig.set_figwidth(min(widest, width * max(1.1, need * 1.15)))


def headroom(lim: tuple[float, float], log: bool, share: float) -> tuple[float, float]:
    """Axis limits raised at the top so that the data's old range takes the lower 1 − `share` of the axis."""
    low, high = (math.log10(v) for v in lim) if log else lim
    top = low + (high - low) / (1 - share)
    return (lim[0], 10**top) if log else (low, top)


def final_metric(
    table: pd.DataFrame,
    runs: pd.DataFrame,
    metric: str,
    log: bool,
    colour: dict[str, tuple],
    path: Path,
    floor: float | None = None,
) -> Path:
    """The deciding metric per variant: each trained seed as a dot, the (geometric) mean with its 95% interval;
    a variant that did not train in some seed says so in words at the top of its column, in its colour; `floor`:
    the unigram model's score, in a legend below the plot. The figure is made wide enough that no column's words
    or tick label reach into the next one's (checked with the renderer: `fit_columns`)."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(max(7.5, 1.1 * len(table)), 4.2), layout="constrained")
        trained = runs[runs["outcome"] == TRAINED]
        values = (
            list(trained[metric].dropna())
            + list(table[f"{metric}_low"].dropna())
            + list(table[f"{metric}_high"].dropna())
            + ([floor] if floor is not None else [])
        )
        failed = runs[(runs["outcome"] == FAILED_TO_LEARN) & np.isfinite(runs[metric].astype(float))]
        if trained[metric].dropna().empty:  # nothing trained: the axes show how far the others stayed from learning
            values += list(failed[metric])
        use_log = log_axis(values, log)
        lim = shown = limits(values, use_log, pad=0.15) or (0.0, 1.0)  # `shown`: the data's part of the axis
        lines = max(
            (
                sum(bool(getattr(row, o)) for o in (DIVERGED, FAILED_TO_LEARN)) or 1
                for row in table.itertuples()
                if row.trained < row.seeds
            ),
            default=0,
        )
        if lines:  # room above the data for the words at the top of the columns (~5% of the height a line)
            lim = headroom(lim, use_log, 0.055 * lines + 0.04)
        words, crosses = [], 0
        for i, row in enumerate(table.itertuples(index=False)):
            seeds = trained[trained["variant"] == row.variant][metric].dropna()
            ax.plot([i] * len(seeds), seeds, "o", color=colour[row.variant], alpha=0.45, markersize=5)
            unlearned = failed[failed["variant"] == row.variant][metric]
            unlearned = unlearned[(unlearned >= shown[0]) & (unlearned <= shown[1])]  # beyond: the words say it
            ax.plot([i] * len(unlearned), unlearned, "x", color=colour[row.variant], markersize=7, markeredgewidth=1.5)
            crosses += len(unlearned)
            mean, low, high = (getattr(row, f"{metric}_{k}") for k in ("mean", "low", "high"))
            if not math.isnan(mean):
                error = None if math.isnan(low) else [[mean - low], [high - mean]]
                ax.errorbar(i, mean, yerr=error, fmt="D", color=colour[row.variant], capsize=6, markersize=7)
            if row.trained < row.seeds:
                said = "\n".join(
                    f"{getattr(row, o)} {WORDS[o]}" for o in ("diverged", "failed_to_learn") if getattr(row, o)
                )
                words.append(
                    ax.annotate(
                        said or "no result",
                        (i, 1.0),
                        xycoords=("data", "axes fraction"),
                        xytext=(0, -6),
                        textcoords="offset points",
                        ha="center",
                        va="top",
                        fontsize=8,
                        color=colour[row.variant],
                        fontweight="bold",
                    )
                )
        if floor is not None:
            draw_floor(ax, floor)
            fig.legend(loc="outside lower center", frameon=False)
        if use_log:
            ax.set_yscale("log")
        ax.set_ylim(*lim)
        ax.set_xticks(np.arange(len(table)), [v.replace(",", "\n") for v in table["variant"]], fontsize=8)
        ax.set_xlim(-0.5, len(table) - 0.5)
        ax.set(ylabel=metric)
        ax.set_title(f"final {metric} per variant", loc="left")
        ax.set_title(
            f"dots: the seeds that trained\ndiamond: {'geometric ' if log else ''}mean and 95% CI"
            + ("\n×: a seed that failed to learn" if crosses else ""),
            loc="right",
            fontsize=7,
            color="0.35",
        )
        fit_columns(fig, ax, words + list(ax.get_xticklabels()))
        return save(fig, path)


def effect_words(value: float, log: bool) -> str:
    """A paired effect as the report's table writes it: a ratio (×0.878) or a difference in points (+1.23)."""
    if not log:
        return f"{value:+.2f}"
    ratio = math.exp(value)
    return f"×{ratio:#.3g}" if abs(ratio - 1) >= 0.01 else f"×{ratio:.4f}"


def ratio_ticks(low: float, high: float) -> list[float]:
    """Ticks for a log axis of ratios from `low` to `high`: 1-2-5 steps over a wide range, evenly spaced ones over a
    narrow one (where a log axis looks linear and has no decade inside)."""
    if high / low > 4:
        ticks = [
            m * 10.0**e for e in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1) for m in (1, 2, 5)
        ]
    else:
        ticks = list(ticker.MaxNLocator(6).tick_values(low, high))
    return [t for t in ticks if low <= t <= high]


def factor_effects(
    effects: pd.DataFrame, metric: str, log: bool, better: str, path: Path, smallest: float | None = None
) -> Path:
    """A forest plot of each factor's paired effect (stats.factor_effects): one panel per change of a factor (from
    its first value to another), one row in it per setting of the other factors and the pooled row last; each row
    the mean paired effect (a geometric mean ratio on a log axis for a perplexity, else a difference) with its 95%
    interval, filled where the interval excludes no change; its numbers and pairs written at the right. A row with
    no pair in which both runs trained has no mark: it says so, with the runs that trained at each value.
    `smallest`: the declared smallest effect (on the comparison scale), shaded on either side of no change."""
    groups = [group for _, group in effects.groupby(["factor", "from", "to"], sort=False)]
    colour = factor_colours(list(dict.fromkeys(effects["factor"])))
    back = np.exp if log else (lambda v: v)
    none = 1.0 if log else 0.0
    ends = [v for v in (*effects["ci_low"], *effects["ci_high"], *effects["mean_difference"]) if math.isfinite(v)]
    if smallest is not None:
        ends += [-abs(smallest), abs(smallest)]
    xs = [float(back(v)) for v in ends] + [none]
    lim = limits(xs, log, pad=0.1) or (0.5, 2.0)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(
            len(groups),
            2,
            sharex="col",
            squeeze=False,
            figsize=(10.5, 1.2 + sum(0.34 * len(g) + 0.5 for g in groups)),
            height_ratios=[len(g) + 0.6 for g in groups],
            width_ratios=[3, 2],
            layout="constrained",
        )
        for (ax, column), group in zip(axes, groups):  # the forest, and its numbers in a column beside it
            column.set_axis_off()
            column.set_ylim(len(group) - 0.4, -0.6)
            first = group.iloc[0]
            tone = colour[first["factor"]]
            labels = []
            for y, row in enumerate(group.itertuples(index=False)):
                pooled = row.stratum == "all"
                labels.append(
                    ("pooled over the settings" if len(group) > 1 else "all pairs") if pooled else row.stratum
                )
                trained = f"trained {row.trained_from}/{row.runs_from} → {row.trained_to}/{row.runs_to}"
                if not math.isfinite(row.mean_difference):
                    words, shade = f"no pair in which both runs trained ({trained})", "0.45"
                else:
                    mean = float(back(row.mean_difference))
                    interval = math.isfinite(row.ci_low)
                    clear = interval and (row.ci_low > 0 or row.ci_high < 0)
                    if interval:
                        ax.plot(
                            [back(row.ci_low), back(row.ci_high)],
                            [y, y],
                            color=tone,
                            linewidth=2.2,
                            solid_capstyle="butt",
                        )
                    ax.plot(
                        [mean],
                        [y],
                        marker="D" if pooled else "o",
                        markersize=8 if pooled else 7,
                        color=tone,
                        markerfacecolor=tone if clear else "white",
                        markeredgewidth=1.6,
                        linestyle="none",
                        zorder=3,
                    )
                    pairs = f"{row.pairs} pair{'s' if row.pairs != 1 else ''}"
                    words = (
                        f"{effect_words(row.mean_difference, log)} "
                        f"[{effect_words(row.ci_low, log)}, {effect_words(row.ci_high, log)}], {pairs}"
                        if interval
                        else f"{effect_words(row.mean_difference, log)}, {pairs}: no interval"
                    )
                    shade = "0.1"
                column.text(
                    0.0,
                    y,
                    words,
                    va="center",
                    fontsize=8,
                    color=shade,
                    fontweight="bold" if pooled else "normal",
                )
            ax.axvline(none, color="0.2", linewidth=1)
            if smallest is not None:
                ax.axvspan(back(-abs(smallest)), back(abs(smallest)), color="0.85", zorder=0, linewidth=0)
            ax.set_yticks(range(len(group)), labels, fontsize=8)
            ax.set_ylim(len(group) - 0.4, -0.6)
            ax.grid(axis="y", visible=False)
            ax.set_title(f"{first['factor']}: {first['from']} → {first['to']}", loc="left", fontsize=9, color=tone)
        bottom = axes[-1, 0]
        axes[0, 1].set_title("paired effect [95% CI], pairs that both trained", loc="left", fontsize=8, color="0.35")
        if log:
            bottom.set_xscale("log")
            ticks = ratio_ticks(*lim)
            bottom.xaxis.set_major_locator(ticker.FixedLocator(ticks))
            bottom.xaxis.set_major_formatter(ticker.FixedFormatter([f"×{t:g}" for t in ticks]))
            bottom.xaxis.set_minor_locator(ticker.NullLocator())
        bottom.set_xlim(*lim)
        worse = "higher" if better == "lower" else "lower"
        bottom.set_xlabel(
            f"← {metric} lower    "
            + (
                "ratio, changed / original (geometric mean of the paired ratios)"
                if log
                else "difference, changed − original (mean of the paired differences)"
            )
            + f"    {metric} higher →"
        )
        fig.suptitle(
            f"effect of each factor on {metric}, paired on the other factors and the seed",
            x=0.01,
            ha="left",
            fontsize=11,
        )
        note = (
            f"mark: mean paired effect, line: its 95% CI (Student t); filled where the CI excludes no change "
            f"({better} is better, {worse} is worse); diamond: pooled over the other factors' settings"
            + (
                f"; grey band: within the declared smallest effect, {effect_words(abs(smallest), log)} either way"
                if smallest is not None
                else ""
            )
        )
        fig.text(0.01, 0.0, note, fontsize=7, color="0.35", ha="left", va="top", wrap=True)
        return save(fig, path)


def context_curves(result: dict, path: Path) -> Path:
    """The context probe of one run, two panels against k (log axis): left, perplexity with the context cut to the
    last k tokens, against the full-context perplexity and its +1%/+5% lines; right, perplexity of a fixed window
    whose words beyond k are shuffled, against the same window unshuffled. The effective k's are marked."""
    grids = (result["ks"], result.get("order_ks", result["ks"]))  # the order probe may use a coarser grid
    panels = [
        (
            "context cut to the last k tokens (state reset before them)",
            result["ppl"],
            result["full_ppl"],
            "full context (state carried through the split)",
            "k",
            "#1f77b4",
        ),
        (
            f"words beyond distance k shuffled, in a {result['window']}-token window",
            result["shuffled_ppl"],
            result["window_ppl"],
            f"the {result['window']}-token window, unshuffled",
            "order_k",
            "#d62728",
        ),
    ]
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), sharey=True)
        values = [v for _, curve, ref, *_ in panels for v in [*curve, ref * 1.05]]
        log = log_axis(values, True)
        for ax, ks, (title, curve, reference, ref_label, prefix, colour) in zip(axes, grids, panels):
            ax.plot(ks, curve, marker="o", markersize=4, color=colour, label="perplexity at k")
            ax.axhline(reference, color="black", linewidth=1.2, label=f"{ref_label}: {reference:.1f}")
            for name, tolerance, style in (("1pct", 0.01, ":"), ("5pct", 0.05, "--")):
                k, reached = result[f"{prefix}_{name}"], result[f"{prefix}_{name}_reached"]
                ax.axhline(
                    reference * (1 + tolerance),
                    color="0.4",
                    linestyle=style,
                    linewidth=1,
                    label=f"+{tolerance:.0%}: "
                    + (f"reached from k = {k:.3g}" if reached else f"not reached by k = {k:g}"),
                )
                if reached:
                    ax.axvline(k, color="0.4", linestyle=style, linewidth=1)
            ax.set_xscale("log")
            ticks = [k for k in ks if k in (1, 2, 3, 5, 8, 13, 20, 30, 50, 80, 130, 200) or k == ks[-1]]
            ax.set_xticks(ticks, [str(k) for k in ticks])
            ax.minorticks_off()
            if log:
                ax.set_yscale("log")
            ax.set(xlabel="k (tokens of context, log axis)", title=title)
            ax.legend(loc="upper right")
        axes[0].set_ylabel(f"perplexity on {result['positions']} positions of {result['split']}")
        fig.suptitle(f"context probe, run {result['run_id'][:8]} ({result['cell']})", x=0.01, ha="left", fontsize=11)
        return save(fig, path)


def gradient_flow_curves(result: dict, path: Path) -> Path:
    """‖∂L_t/∂h_{t−k}‖ against k (log axis): the geometric mean over positions at initialisation and trained, each
    with its 10–90% band and its fitted per-step rate and σ₁ in the legend; an LSTM's cell-state gradient dashed."""
    ks = result["ks"]
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(8.5, 4.6))
        for when, colour in (("init", "#7f7f7f"), ("trained", "#1f77b4")):
            sigma = ", ".join(f"{s:.2f}" for s in result[f"sigma_{when}"])
            radius = ", ".join(f"{r:.2f}" for r in result[f"radius_{when}"])
            ax.plot(
                ks,
                result[f"norm_{when}"],
                color=colour,
                linewidth=1.6,
                label=f"{when}: h, ×{result[f'rate_{when}']:.3f} per step; W_hh per layer: σ₁ {sigma}, "
                f"spectral radius {radius}",
            )
            ax.fill_between(
                ks, result[f"norm_{when}_q10"], result[f"norm_{when}_q90"], color=colour, alpha=0.18, linewidth=0
            )
            if f"cell_norm_{when}" in result:
                ax.plot(
                    ks,
                    result[f"cell_norm_{when}"],
                    color=colour,
                    linestyle="--",
                    linewidth=1.2,
                    label=f"{when}: LSTM cell state c, ×{result[f'cell_rate_{when}']:.3f} per step",
                )
        ax.set_yscale("log")
        ax.set(xlabel="k (steps back from the loss)", ylabel="‖∂L_t / ∂h_(t−k)‖ (geometric mean over positions)")
        ax.set_title(
            f"gradient flow, run {result['run_id'][:8]} ({result['cell']}), {result['positions']} positions "
            f"of {result['split']}",
            loc="left",
        )
        ax.set_title(
            f"band: 10–90% of positions; rates fitted over k = {result['rate_fit_ks'][0]} … {result['rate_fit_ks'][1]}",
            loc="right",
            fontsize=7,
            color="0.35",
        )
        legend(ax)
        return save(fig, path)


# ---- the claims report's figures (drawn by each claim kind: tasks/claim_kinds/) ----


def first_number(value) -> float:
    """A probe figure given per layer (a list) as one number: the median of the layers'."""
    if isinstance(value, (list, tuple)):
        values = [float(v) for v in value if v is not None]
        return float(np.median(values)) if values else math.nan
    return math.nan if value is None else float(value)


def context_by_cell(curves: dict[str, list[dict]], path: Path, level: float = 0.05) -> Path:
    """Perplexity with the context truncated to k tokens, relative to the full context, vs k (log x): one line per
    run, one colour per cell; the level line dashed (a run's effective context is where it drops below)."""
    colour = colours(list(curves))
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots()
        for cell, probes in curves.items():
            for i, probe in enumerate(probes):
                ks, ppl, full = probe["ks"], [first_number(v) for v in probe["ppl"]], first_number(probe["full_ppl"])
                ax.plot(
                    ks,
                    [p / full for p in ppl],
                    color=colour[cell],
                    marker="o",
                    markersize=3,
                    linewidth=1.2,
                    label=f"{cell} ({len(probes)} seed{'s' if len(probes) > 1 else ''})" if i == 0 else None,
                )
        ax.axhline(1 + level, color="0.3", linestyle="--", linewidth=1, label=f"within {level:.0%} of full context")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set(
            xlabel="context kept, k (tokens)",
            ylabel="perplexity(k) / perplexity(full context)",
            title="how much context the trained models use (one line per seed)",
        )
        legend(ax)
        return save(fig, path)


def gradient_flow_by_cell(curves: dict[str, list[dict]], path: Path) -> Path:
    """The norm of the gradient reaching the hidden state k steps back vs k (log y): one colour per cell, the trained
    model solid, the same model at initialisation dashed; one line per seed."""
    colour = colours(list(curves))
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots()
        for cell, probes in curves.items():
            for i, probe in enumerate(probes):
                for key, style, when in (("norm_trained", "-", "trained"), ("norm_init", "--", "at init")):
                    ax.plot(
                        probe["ks"],
                        [first_number(v) for v in probe[key]],
                        color=colour[cell],
                        linestyle=style,
                        linewidth=1.2,
                        label=f"{cell}, {when}" if i == 0 else None,
                    )
        ax.set_yscale("log")
        ax.set(
            xlabel="distance k (steps back)",
            ylabel="gradient norm at h(t−k)",
            title="gradient flow through time (one line per seed)",
        )
        legend(ax)
        return save(fig, path)


def spectral(check: dict, path: Path) -> Path:
    """The controlled spectral check: gradient norm vs k for a recurrent matrix scaled to each spectral radius."""
    radii = [str(r) for r in check["radii"]]
    colour = colours(radii)
    norms = {str(k): v for k, v in check["norms"].items()}
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots()
        for radius in radii:
            ax.plot(
                check["ks"],
                [first_number(v) for v in norms[radius]],
                color=colour[radius],
                linewidth=1.4,
                label=f"orthogonal, spectral radius {radius}",
            )
        for name, style in (("non_normal", "--"), ("contracted", ":")):  # absent from checks recorded before them
            if name in check:
                part = check[name]
                ax.plot(
                    part["ks"],
                    part["norms"],
                    color="0.2",
                    linestyle=style,
                    linewidth=1.4,
                    label=f"non-normal, eigenvalues ≤ {part['eigenvalue']:.2g}, σ₁ {part['sigma']:.2f}",
                )
        ax.set_yscale("log")
        ax.set(
            xlabel="distance k (steps back)",
            ylabel="gradient norm at h(t−k)",
            title="spectral check (by construction): radius r gives r^k; eigenvalues < 1 with σ₁ > 1 first grow",
        )
        legend(ax)
        return save(fig, path)


def diverged_shares(rows: dict[str, dict], clipped_label: str, path: Path) -> Path:
    """Per setting: the share of runs that diverged, unclipped and clipped, as bars with the counts written on them."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots()
        x = np.arange(len(rows))
        for offset, (key, label, shade) in zip(
            (-0.2, 0.2), (("off", "unclipped", "tab:red"), ("on", f"clipped at {clipped_label}", "tab:blue"))
        ):
            shares = [v[key] / v[f"{key}_runs"] if v[f"{key}_runs"] else 0.0 for v in rows.values()]
            ax.bar(x + offset, shares, width=0.38, color=shade, label=label)
            for xi, share, v in zip(x, shares, rows.values()):
                ax.annotate(
                    f"{v[key]}/{v[f'{key}_runs']}",
                    (xi + offset, share),
                    xytext=(0, 3),
                    textcoords="offset points",
                    ha="center",
                    fontsize=8,
                )
        ax.set_xticks(x, list(rows))
        ax.set_ylim(0, 1.15)
        ax.set(ylabel="share of runs that diverged", title="tanh RNN: runs that diverged, unclipped vs clipped")
        legend(ax)
        return save(fig, path)


def layer_norms(lines: dict[str, list[float]], path: Path) -> Path:
    """Each recurrent layer's mean pre-clip gradient norm over training vs its depth (0 = lowest), log y: one line
    per stack (depth, residual or not), the median over its seeds."""
    colour = colours(list(lines))
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots()
        for name, values in lines.items():
            ax.plot(
                range(len(values)),
                values,
                color=colour[name],
                marker="o",
                markersize=4,
                linestyle="-" if "residual=true" in name else "--",
                label=name,
            )
        ax.set_yscale("log")
        ax.set(
            xlabel="layer (0 = lowest)",
            ylabel="mean gradient norm of the layer",
            title="gradient reaching each layer (median over seeds; dashed: no residual)",
        )
        legend(ax)
        return save(fig, path)


def paired_metric(groups: dict[str, dict[str, dict[int, float]]], metric: str, path: Path) -> Path:
    """A metric per setting and variant (e.g. BLEU by attention, bidirectional or not): each seed a dot, the mean a
    bar outline, seeds of one setting joined between its variants."""
    variants = list(dict.fromkeys(v for g in groups.values() for v in g))
    colour = colours(variants)
    width = 0.8 / max(len(variants), 1)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots()
        for gi, by_variant in enumerate(groups.values()):
            for vi, variant in enumerate(variants):
                seeds = by_variant.get(variant, {})
                x = gi - 0.4 + width * (vi + 0.5)
                if seeds:
                    ax.bar(
                        x,
                        np.mean(list(seeds.values())),
                        width=width * 0.9,
                        fill=False,
                        edgecolor=colour[variant],
                        linewidth=1.5,
                        label=variant if gi == 0 else None,
                    )
                    ax.plot([x] * len(seeds), list(seeds.values()), "o", color=colour[variant], markersize=5)
        ax.set_xticks(np.arange(len(groups)), list(groups))
        ax.set(ylabel=metric, title=f"{metric} by variant (bar: mean over seeds; dots: seeds)")
        legend(ax)
        return save(fig, path)


def expected_best(curves: dict[str, Any], labels: dict[str, str], metric: str, log: bool, path: Path) -> Path:
    """Each arm's expected best score against the number of trials (Dodge et al. 2019), with its bootstrap band."""
    colour = colours(list(curves))
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots()
        finite = [v for c in curves.values() for v in (*c.expected, *c.low, *c.high) if np.isfinite(v)]
        for arm, c in curves.items():
            ax.plot(
                c.n,
                np.where(np.isfinite(c.expected), c.expected, np.nan),
                marker="o",
                color=colour[arm],
                label=labels.get(arm, arm),
            )
            ax.fill_between(
                c.n,
                np.where(np.isfinite(c.low), c.low, np.nan),
                np.where(np.isfinite(c.high), c.high, np.nan),
                color=colour[arm],
                alpha=0.15,
                lw=0,
            )
        if log_axis(finite, log):
            ax.set_yscale("log")
        lim = limits(finite, log_axis(finite, log))
        if lim:
            ax.set_ylim(*lim)
        ax.set_xlabel("trials per arm")
        ax.set_ylabel(f"expected best {metric}")
        ax.set_xticks(list(next(iter(curves.values())).n) if curves else [])
        legend(ax)
        return save(fig, path)
