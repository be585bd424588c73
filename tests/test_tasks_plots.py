"""Every saved plot shows its data: the PNGs are read back and each variant's colour is looked for where its series
should be, and the axes are checked to be scaled to the runs that trained (an exploded run must not flatten them)."""

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread
from test_tasks_verdict import LSTM_OFF, LSTM_ON, TANH_OFF, TANH_ON, comparison

from tasks.reporting import plots

VARIANTS = [
    "cell=rnn_tanh,clip_norm=null",
    "cell=rnn_tanh,clip_norm=0.25",
    "cell=lstm,clip_norm=null",
    "cell=lstm,clip_norm=0.25",
]
COLOUR = plots.colours(VARIANTS)


def pixels(png, variant: str, tolerance: float = 0.05) -> np.ndarray:
    """(row, column) of every pixel of the PNG drawn in the variant's colour."""
    image = imread(png)[..., :3]
    target = np.array(COLOUR[variant][:3])
    return np.argwhere(np.abs(image - target).max(axis=-1) < tolerance)


def series(values: list[float], steps=(100, 200, 300)) -> pd.Series:
    return pd.Series(values, index=list(steps), dtype=float)


def test_the_validation_curve_is_scaled_to_the_runs_that_trained_and_marks_the_rest(tmp_path):
    curves = {
        VARIANTS[0]: [("diverged", series([4.1e249], steps=[50])), ("diverged", series([math.inf], steps=[60]))],
        VARIANTS[1]: [("trained", series([900.0, 860.0, 850.0])), ("trained", series([910.0, 870.0, 855.0]))],
        VARIANTS[2]: [("trained", series([820.0, 760.0, 700.0])), ("trained", series([830.0, 770.0, 720.0]))],
        VARIANTS[3]: [("failed_to_learn", series([2e4, 3e4, 8.3e31]))],
    }
    path = plots.metric_curves(curves, {VARIANTS[3]: [("diverged", 40)]}, "valid_ppl", True, COLOUR, tmp_path / "c.png")
    height = imread(path).shape[0]
    for variant in VARIANTS:
        assert len(pixels(path, variant)) > 20, f"{variant} is not on the plot"
    for variant in VARIANTS[1:3]:  # the trained lines use the height of the axes, not a sliver at the bottom
        rows = pixels(path, variant)[:, 0]
        assert rows.max() - rows.min() > 0.25 * height
    failed = pixels(path, VARIANTS[0])[:, 0]
    assert failed.min() < 0.2 * height  # the exploded runs sit on the top edge


def test_a_curve_where_nothing_trained_still_shows_every_run(tmp_path):
    curves = {
        VARIANTS[0]: [("diverged", series([1e30, 1e40], steps=[50, 100]))],
        VARIANTS[3]: [("failed_to_learn", series([2e4, 1.5e4, 1.2e4]))],
    }
    path = plots.metric_curves(curves, {}, "valid_ppl", True, COLOUR, tmp_path / "c.png")
    assert len(pixels(path, VARIANTS[0])) > 20 and len(pixels(path, VARIANTS[3])) > 20


def test_the_final_plot_shows_every_trained_variant_and_says_which_did_not_train(tmp_path):
    c = comparison(
        {
            TANH_OFF: [("diverged", math.inf), ("diverged", 1.7976931348623157e308)],
            TANH_ON: [("trained", 850.0), ("trained", 860.0)],
            LSTM_OFF: [("trained", 700.0), ("trained", 720.0)],
            LSTM_ON: [("trained", 800.0), ("trained", 810.0)],
        }
    )
    path = plots.final_metric(c.table, c.runs, "valid_ppl", True, COLOUR, tmp_path / "f.png")
    height = imread(path).shape[0]
    for variant in VARIANTS[1:]:
        assert len(pixels(path, variant)) > 20, f"{variant} is not on the plot"
    rows = {v: pixels(path, v)[:, 0].mean() for v in VARIANTS[1:]}
    assert rows[VARIANTS[2]] - rows[VARIANTS[1]] > 0.15 * height  # 700 sits well below 850: not flattened together
    assert len(pixels(path, VARIANTS[0], tolerance=0.12)) > 5  # "2 diverged", written in the variant's colour


def test_the_gradient_norm_plot_draws_each_variant_and_its_clipping_threshold(tmp_path):
    steps = np.arange(300)
    rng = np.random.default_rng(0)
    norms = {
        VARIANTS[0]: [pd.Series(np.r_[rng.uniform(5, 50, 40), [np.inf] * 5], index=steps[:45])],
        VARIANTS[3]: [pd.Series(rng.uniform(0.3, 1.5, 300), index=steps)] * 2,
    }
    path = plots.gradient_norms(norms, {VARIANTS[3]: 0.25}, COLOUR, tmp_path / "g.png")
    for variant in (VARIANTS[0], VARIANTS[3]):
        assert len(pixels(path, variant)) > 100


@pytest.mark.parametrize(
    "values, log, expected", [([500.0, 900.0], True, False), ([500.0, 4e31], True, True), ([1.0, 100.0], False, False)]
)
def test_a_log_axis_only_where_values_span_orders_of_magnitude(values, log, expected):
    assert plots.log_axis(values, log) == expected


def test_a_run_stopped_before_its_first_validation_is_marked_where_it_stopped_and_says_so(tmp_path, monkeypatch):
    legends = []
    save = plots.save
    monkeypatch.setattr(
        plots,
        "save",
        lambda fig, path: (
            legends.extend(t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()),
            save(fig, path),
        )[1],
    )
    curves = {
        VARIANTS[0]: [],
        VARIANTS[1]: [("trained", series([900.0, 860.0, 850.0])), ("trained", series([910.0, 870.0, 855.0]))],
    }
    path = plots.metric_curves(curves, {VARIANTS[0]: [("diverged", 50)]}, "valid_ppl", True, COLOUR, tmp_path / "c.png")
    assert f"{VARIANTS[0]}: diverged (stopped before its first validation)" in legends, legends
    assert not any("inf" in text for text in legends)  # it has no value: it is not "off the axes at inf"
    assert len(pixels(path, VARIANTS[0])) > 20  # its ×, on the top edge


def test_the_training_loss_plot_keeps_the_axis_for_the_runs_that_trained_and_shows_where_the_others_blew_up(
    tmp_path, monkeypatch
):
    legends, limits = [], []
    save = plots.save
    monkeypatch.setattr(
        plots,
        "save",
        lambda fig, path: (
            legends.extend(t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()),
            limits.append(fig.axes[0].get_ylim()),
            save(fig, path),
        )[2],
    )
    steps = np.arange(500)
    falling = 9.2 - 3.0 * (1 - np.exp(-steps / 80))  # 9.2 → ~6.2 nats
    losses = {
        VARIANTS[2]: [("diverged", pd.Series([9.2, 9.3, 14.0, 60.0, 95.0, 80.0], index=steps[:6]))] * 2,
        VARIANTS[3]: [
            ("trained", pd.Series(falling + 0.05, index=steps)),
            ("trained", pd.Series(falling - 0.05, index=steps)),
        ],
    }
    path = plots.training_losses(losses, COLOUR, tmp_path / "t.png", uniform=math.log(10_000), floor=math.log(687.0))
    low, high = limits[0]
    assert high == pytest.approx(1.15 * math.log(10_000)) and low < 6.2  # 95 nats does not flatten the trained line
    height = imread(path).shape[0]
    rows = pixels(path, VARIANTS[3])[:, 0]
    assert rows.max() - rows.min() > 0.3 * height  # the trained runs' fall uses the plot's height
    assert len(pixels(path, VARIANTS[2])) > 10  # the blown-up runs, leaving through the top
    assert f"{VARIANTS[2]}: diverged 2, ended after 6 steps (a line each)" in legends
    assert "unigram model (floor): ln 687.0 = 6.53" in legends


# ---- issue 29: reports read at a glance ----


def drawn(monkeypatch) -> list:
    """The figures that plots.save is given, as it laid them out and saved them (closed, each is given a canvas
    of its own again, to be drawn and measured)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figures = []
    save = plots.save

    def keep(fig, path):
        saved = save(fig, path)
        FigureCanvasAgg(fig)
        figures.append(fig)
        return saved

    monkeypatch.setattr(plots, "save", keep)
    return figures


def tint(png, colour: tuple, alpha: float, tolerance: float = 0.03) -> np.ndarray:
    """(row, column) of every pixel of a band: `colour` at `alpha` over the white background."""
    image = imread(png)[..., :3]
    target = alpha * np.array(colour[:3]) + (1 - alpha)
    return np.argwhere(np.abs(image - target).max(axis=-1) < tolerance)


def by_column(points: np.ndarray) -> dict[int, np.ndarray]:
    return {int(c): points[points[:, 1] == c, 0] for c in np.unique(points[:, 1])}


def test_the_training_loss_of_each_variant_is_its_mean_over_seeds_inside_a_min_max_band(tmp_path, monkeypatch):
    figures = drawn(monkeypatch)
    steps = np.arange(400)
    fall = 2.0 * np.exp(-steps / 60)

    def seeds(outcome: str, level: float, spread: float) -> list:
        return [(outcome, pd.Series(level + fall + spread * (k - 1), index=steps)) for k in range(3)]

    losses = {  # a wide spread over seeds, low; a narrow one, high (a run that ran its budget and learned nothing)
        VARIANTS[1]: seeds("trained", 5.0, 0.3),
        VARIANTS[3]: seeds("failed_to_learn", 7.0, 0.06),
    }
    path = plots.training_losses(losses, COLOUR, tmp_path / "t.png", uniform=math.log(10_000))
    labels = [t.get_text() for t in figures[0].legends[0].get_texts()] if figures[0].legends else []
    labels += [t.get_text() for ax in figures[0].axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert f"{VARIANTS[1]} (trained: 3)" in labels and f"{VARIANTS[3]} (failed to learn: 3)" in labels
    thickness = {}
    for variant in (VARIANTS[1], VARIANTS[3]):
        line, band = by_column(pixels(path, variant)), by_column(tint(path, COLOUR[variant], 0.15))
        columns = sorted(set(line) & set(band))
        assert len(columns) > 100, f"{variant}: no line inside a band"
        # the mean runs inside its band: band above and below the line in (nearly) every column
        inside = [band[c].min() < line[c].mean() < band[c].max() for c in columns]
        assert np.mean(inside) > 0.9, variant
        thickness[variant] = np.median([band[c].max() - band[c].min() for c in columns])
    assert thickness[VARIANTS[1]] > 2.5 * thickness[VARIANTS[3]]  # 0.6 nats between seeds against 0.12
    rows = {v: pixels(path, v)[:, 0].mean() for v in (VARIANTS[1], VARIANTS[3])}
    assert rows[VARIANTS[1]] > rows[VARIANTS[3]]  # the lower loss is drawn lower
    assert plots.overlapping_texts(figures[0]) == []


THREE = {"model.cell": ["rnn_tanh", "lstm"], "train.clip_norm": ["null", "0.25"], "train.lr": ["1.0", "20.0"]}
EIGHT = {
    f"cell={cell},clip_norm={clip},lr={lr}": {"model.cell": cell, "train.clip_norm": clip, "train.lr": lr}
    for clip in THREE["train.clip_norm"]
    for lr in THREE["train.lr"]
    for cell in THREE["model.cell"]
}


def test_three_factors_draw_small_multiples_one_panel_per_setting_of_the_others(tmp_path, monkeypatch):
    layout = plots.panels(EIGHT, THREE)
    assert (layout.rows, layout.columns) == (2, 2)
    assert layout.variants[(1, 0)] == ["cell=rnn_tanh,clip_norm=0.25,lr=1.0", "cell=lstm,clip_norm=0.25,lr=1.0"]
    assert layout.titles[(1, 0)] == "clip_norm=0.25, lr=1.0"
    assert plots.panels({v: s for v, s in EIGHT.items()}, dict(list(THREE.items())[:2])).single  # two: one panel

    figures = drawn(monkeypatch)
    colour = plots.colours(list(EIGHT))
    curves = {
        v: [("trained", series([600.0 - 40 * i, 500.0 - 40 * i, 450.0 - 40 * i]))] * 2 for i, v in enumerate(EIGHT)
    }
    path = plots.metric_curves(curves, {}, "valid_ppl", True, colour, tmp_path / "c.png", layout=layout)
    fig = figures[0]
    assert len(fig.axes) == 4
    for (r, c), variants in layout.variants.items():  # each panel draws its own two variants, on the same axes
        ax = fig.axes[2 * r + c]
        assert {line.get_label() for line in ax.get_lines()} == {f"{v} (trained: 2)" for v in variants}
        assert ax.get_ylim() == fig.axes[0].get_ylim() and ax.get_xlim() == fig.axes[0].get_xlim()
    # in the image: lr=1.0 in the left column of panels, lr=20.0 in the right; clip_norm=null above 0.25
    image = imread(path)
    where = {}
    for v in [v for v in EIGHT if np.ptp(colour[v][:3]) > 0.2]:  # tab10's grey is also the colour of the frames
        image_pixels = np.argwhere(np.abs(image[..., :3] - np.array(colour[v][:3])).max(axis=-1) < 0.05)
        assert len(image_pixels) > 50, v
        where[v] = np.median(image_pixels, axis=0)  # the legend's swatch is a few pixels: the panel's line decides
    for v, s in EIGHT.items():
        across = v.replace("lr=1.0", "lr=20.0") if s["train.lr"] == "1.0" else None
        below = v.replace("clip_norm=null", "clip_norm=0.25") if s["train.clip_norm"] == "null" else None
        if across in where and v in where:
            assert where[across][1] - where[v][1] > 0.25 * image.shape[1], (v, across)
        if below in where and v in where:
            assert where[below][0] - where[v][0] > 0.15 * image.shape[0], (v, below)
    assert plots.overlapping_texts(fig) == []


def effect_rows(monkeypatch, tmp_path, cells: dict, smallest: float | None = None):
    from tasks.analysis.answer import answer

    c = comparison(cells)
    effects = answer(c).effects
    figures = drawn(monkeypatch)
    path = plots.factor_effects(effects, "valid_ppl", True, "lower", tmp_path / "e.png", smallest)
    return effects, path, figures[0]


def test_the_effect_plot_draws_one_interval_per_paired_effect_and_says_where_there_is_none(tmp_path, monkeypatch):
    seeds = [1.0, 1.3, 0.8, 1.15]  # a spread over seeds, so that each interval is wide enough to see
    cells = {
        TANH_OFF: [("diverged", math.inf)] * 4,  # no pair with it: its two rows have no interval
        TANH_ON: [("trained", 850.0 * s) for s in seeds],
        LSTM_OFF: [("trained", 600.0 * s**1.5) for s in seeds],
        LSTM_ON: [("trained", 700.0 * s**0.5) for s in seeds],
    }
    effects, path, fig = effect_rows(monkeypatch, tmp_path, cells, smallest=math.log(1.05))
    assert len(effects) == 6  # two factors: each in two settings of the other and pooled
    texts = [t.get_text() for t in plots.drawn_texts(fig)]
    assert sum(t.startswith("no pair in which both runs trained") for t in texts) == 2
    colour = plots.factor_colours(["model.cell", "train.clip_norm"])
    image = imread(path)[..., :3]
    for factor, tone in colour.items():
        mine = effects[effects["factor"] == factor]
        # an interval: a horizontal run of the factor's colour far longer than any glyph or mark
        match = np.abs(image - np.array(tone[:3])).max(axis=-1) < 0.05
        longest = np.array(
            [max((len(run) for run in "".join("1" if m else "0" for m in row).split("0")), default=0) for row in match]
        )
        rows = np.flatnonzero(longest >= 25)
        intervals = len(np.split(rows, np.flatnonzero(np.diff(rows) > 1) + 1)) if len(rows) else 0
        assert intervals == mine["ci_low"].map(math.isfinite).sum() == 2, (factor, intervals)
    for row in effects.itertuples():  # its numbers beside it, as the table writes them
        if math.isfinite(row.ci_low):
            low, high = (plots.effect_words(v, True) for v in (row.ci_low, row.ci_high))
            assert any(
                t.startswith(plots.effect_words(row.mean_difference, True)) and f"[{low}, {high}]" in t for t in texts
            ), row
    assert plots.overlapping_texts(fig) == []


def test_final_plot_labels_never_overlap_however_many_variants_and_however_long_their_names(tmp_path, monkeypatch):
    cells = {
        (f"cell_{i}", "schedule_cosine_with_restarts"): [
            ("diverged", math.inf),
            ("failed_to_learn", 900.0),
            ("failed_to_learn", 950.0),
        ]
        for i in range(12)
    }
    c = comparison(cells)
    colour = plots.colours(list(c.table["variant"]))
    figures = drawn(monkeypatch)
    plots.final_metric(c.table, c.runs, "valid_ppl", True, colour, tmp_path / "f.png", floor=687.0)
    fig = figures[0]
    words = [
        t for t in plots.drawn_texts(fig) if t.get_text().endswith("failed to learn") and t.get_text()[0].isdigit()
    ]
    assert len(words) == 12 and all(t.get_text() == "1 diverged\n2 failed to learn" for t in words)
    assert plots.overlapping_texts(fig) == []
    ax, renderer = fig.axes[0], fig.canvas.get_renderer()
    marks = [  # every seed's mark (× where it failed to learn), its top edge in pixels
        ax.transData.transform((x, y))[1] + line.get_markersize() * fig.dpi / 72 / 2
        for line in ax.get_lines()
        if line.get_marker() not in (None, "None", "")
        for x, y in zip(line.get_xdata(), line.get_ydata())
    ]
    assert len(marks) == 24 and max(marks) < min(t.get_window_extent(renderer).y0 for t in words)  # under the words
    # the check sees what it guards against: at the width the plot used to have, neighbours ran into each other
    fig.set_figwidth(1.1 * 12)
    assert plots.overlapping_texts(fig, words + list(fig.axes[0].get_xticklabels()))


def test_the_overlap_check_finds_two_labels_drawn_over_each_other():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.annotate("3 failed to learn", (0.5, 0.9), xycoords="axes fraction", ha="center")
    ax.annotate("3 failed to learn", (0.52, 0.9), xycoords="axes fraction", ha="center")
    assert plots.overlapping_texts(fig) == [("3 failed to learn", "3 failed to learn")]
    plt.close(fig)
