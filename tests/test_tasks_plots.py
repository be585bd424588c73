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
