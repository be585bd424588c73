"""The report names every test it ran and which way it looks, corrects the best-against-the-rest family for
multiplicity, says per seed which way each significant difference goes, and states power."""

import numpy as np
import pandas as pd
from test_tasks_verdict import LSTM_OFF, LSTM_ON, TANH_ON, comparison

from tasks.analysis import stats
from tasks.analysis.answer import answer
from tasks.reporting.study_report import effects_section, significance_section

CELLS = {
    LSTM_OFF: [("trained", 700.0), ("trained", 720.0), ("trained", 690.0)],
    LSTM_ON: [("trained", 800.0), ("trained", 790.0), ("trained", 815.0)],
    TANH_ON: [("trained", 850.0), ("trained", 860.0), ("trained", 845.0)],
}
BEST, ON, TANH = "cell=lstm,clip_norm=null", "cell=lstm,clip_norm=0.25", "cell=rnn_tanh,clip_norm=0.25"


def bootstrap_table(rows: list[tuple[str, int, float, float]]) -> pd.DataFrame:
    """The significance table as report.significance builds it: (variant, seed, best − variant, p) per test."""
    found = pd.DataFrame(
        [
            {
                "variant": v,
                "seed": s,
                "measure": "valid perplexity",
                "variant_value": 800.0,
                "best_value": 800.0 + d,
                "difference": d,
                "ci_low": d - 5,
                "ci_high": d + 5,
                "p_value": p,
            }
            for v, s, d, p in rows
        ]
    )
    found["p_holm"] = stats.holm(found["p_value"])
    found["significant"] = found["p_holm"] < stats.ALPHA
    return found


def test_significance_names_its_tests_corrects_the_family_and_says_which_way_each_seed_went():
    c = comparison(CELLS)
    sig = bootstrap_table(
        [
            (ON, 1, -100.0, 0.001),
            (ON, 2, 30.0, 0.002),
            (ON, 3, -10.0, 0.2),
            (TANH, 1, -150.0, 0.001),
            (TANH, 2, -140.0, 0.001),
            (TANH, 3, -5.0, 0.03),
        ]
    )
    text = significance_section(c, sig)
    assert "two-sided, null-centred" in text and "Holm's step-down method" in text and "These 6 tests" in text
    assert (
        f"- `{BEST}` against `{ON}`: `{BEST}` lower in seed 1; `{ON}` lower in seed 2; no significant difference "
        f"in seed 3." in text
    )  # opposite directions are never summed into one count
    # 0.03 alone would pass at 5%; as the 5th smallest of 6 tests it is adjusted to 0.06
    assert f"- `{BEST}` against `{TANH}`: `{BEST}` lower in seeds 1, 2; no significant difference in seed 3." in text
    assert "exceeds the noise" not in text


def test_bleu_significance_is_sacrebleus_two_sided_test_and_higher_is_the_better_way():
    c = comparison(
        {LSTM_OFF: [("trained", 30.0)], LSTM_ON: [("trained", 33.0)]}, metric="valid_bleu_greedy", goal="max"
    )
    sig = bootstrap_table([(c.table[~c.table["best"]].iloc[0]["variant"], 1, 3.0, 0.001)]).assign(measure="valid BLEU")
    text = significance_section(c, sig)
    assert "sacrebleu's paired bootstrap" in text and "two-sided" in text
    assert "`cell=lstm,clip_norm=0.25` higher in seed 1." in text


def test_the_factor_table_names_each_test_and_states_power_for_the_declared_smallest_effect():
    c = comparison(CELLS, effect={"smallest": 1.05, "margin": None})
    text = effects_section(c, answer(c).effects)
    for name in (
        "Fisher's exact test (two-sided)",
        "Student-t 95% interval (two-sided)",
        "exact sign test (two-sided",
        "Detectable at 80% power",
        "power for ×1.05",
        "seeds for 80% power",
    ):
        assert name in text, name
    effects = answer(c).effects
    row = effects[(effects["factor"] == "train.clip_norm") & (effects["stratum"] == "cell=lstm")].iloc[0]
    needed = stats.seeds_needed(np.log(1.05), row["sd"])
    assert f"| {stats.power(np.log(1.05), row['sd'], 3):.0%} " in text and f"| {needed} " in text
    without = effects_section(comparison(CELLS), answer(comparison(CELLS)).effects)
    assert "power for ×" not in without and "declared no smallest effect" in without


# ---- issue 29: what the report draws, and how a reader finds it ----


def study_frame(c, **params: str) -> pd.DataFrame:
    """The runs' tags and params as MLflow gives them to the report's figures."""
    variants = c.runs["variant"]
    return pd.DataFrame(
        {
            "run_id": c.runs["run_id"],
            "tags.rnnlab.cell": variants,
            "params.train.clip_norm": [v.rpartition("=")[2] for v in variants],
            "tags.data.vocab_size": "10000",
            **{f"params.{k}": v for k, v in params.items()},
        }
    )


def logged_histories(monkeypatch, histories: dict[str, dict[str, list[tuple[int, float]]]]) -> None:
    """What MLflow returns for each run's metric histories: run id → key → (step, value)."""
    from tasks.reporting import study_report

    monkeypatch.setattr(
        study_report.tracking, "metric_history", lambda run_id, key: histories.get(run_id, {}).get(key, [])
    )


def test_a_study_that_never_validated_during_training_draws_no_curve_from_its_summaries_and_says_so(
    tmp_path, monkeypatch
):
    from tasks.reporting.study_report import figures, plots_section

    c = comparison(CELLS)
    # the summaries, logged once at the end at step 0, and the training loss, logged every step
    logged_histories(
        monkeypatch,
        {
            r.run_id: {
                "valid_ppl": [(0, r.valid_ppl)],
                "train/loss": [(s, 9.2 - 0.1 * s) for s in range(20)],
                "train/grad_norm": [(s, 1.0 + s % 3) for s in range(20)],
            }
            for r in c.runs.itertuples()
        },
    )
    shown = figures(c, study_frame(c, **{"train.val_every_n_steps": "500", "train.max_steps": "20"}), tmp_path)
    assert not (tmp_path / "curve.png").exists()
    assert {p.name for p in tmp_path.iterdir()} == {"train_loss.png", "grad_norm.png", "final.png"}
    text = plots_section(shown, several=False)
    assert (
        "### valid_ppl during training\n\nNo curve: no run validated more than once during training "
        "(`train.val_every_n_steps` 500; `train.max_steps` 20), so there is no valid_ppl curve to draw." in text
    )
    assert "![training loss](train_loss.png)" in text


def test_a_study_that_validated_during_training_draws_its_curve_over_the_steps_it_validated(tmp_path, monkeypatch):
    from tasks.reporting import plots
    from tasks.reporting.study_report import figures

    c = comparison(CELLS)
    logged_histories(
        monkeypatch,
        {
            r.run_id: {"valid_ppl": [(0, r.valid_ppl)], "valid/ppl": [(100, 2 * r.valid_ppl), (200, r.valid_ppl)]}
            for r in c.runs.itertuples()
        },
    )
    limits = {}
    save = plots.save
    monkeypatch.setattr(
        plots, "save", lambda fig, path: (limits.setdefault(path.name, fig.axes[0].get_xlim()), save(fig, path))[1]
    )
    figures(c, study_frame(c), tmp_path)
    low, high = limits["curve.png"]
    assert low > 90 and 200 < high < 210  # its validations' steps, not a summary's step 0


def test_a_summary_logged_at_step_0_is_no_validation_curve():
    from tasks.analysis.compare import legacy_curve, validation_curves

    assert legacy_curve([(0, 412.0)]) == []
    assert legacy_curve([(250, 600.0), (500, 412.0)]) == [(250, 600.0), (500, 412.0)]
    c = comparison(CELLS)
    summaries = {r.run_id: [(0, r.valid_ppl)] for r in c.runs.itertuples()}
    assert validation_curves(
        c.runs, "valid_ppl", lambda run_id, key: summaries[run_id] if key == "valid_ppl" else []
    ).empty
    older = {r.run_id: [(250, 2 * r.valid_ppl), (500, r.valid_ppl)] for r in c.runs.itertuples()}  # before valid/ppl
    found = validation_curves(c.runs, "valid_ppl", lambda run_id, key: older[run_id] if key == "valid_ppl" else [])
    assert sorted(set(found["step"])) == [250, 500]


def test_the_effect_section_draws_the_forest_plot_or_says_why_there_is_none(tmp_path):
    from tasks.reporting.study_report import effects_figure

    c = comparison(CELLS)
    assert effects_figure(c, answer(c).effects, tmp_path) == "![effect of each factor on valid_ppl](effects.png)\n\n"
    assert (tmp_path / "effects.png").stat().st_size > 10_000
    nothing = comparison({LSTM_OFF: [("diverged", np.inf)] * 2, LSTM_ON: [("failed_to_learn", 900.0)] * 2})
    text = effects_figure(nothing, answer(nothing).effects, tmp_path / "none")
    assert text.startswith("No effect plot: no factor has a pair of runs") and not (tmp_path / "none").exists()


def test_the_html_report_opens_with_a_table_of_contents_that_links_to_every_section(tmp_path):
    import re

    from tasks.reporting.study_report import html

    text = "# Study `s`\n\n## Answer\n\nyes\n\n## Plots\n\n### training loss\n\nno plot\n\n## Runs\n\nnone\n"
    page = html(text, tmp_path, "s")
    nav = re.search(r'<nav class="toc" aria-label="Contents">(.*?)</nav>', page, re.S)
    assert nav and page.index("</h1>") < nav.start() < page.index('<h2 id="answer">')
    links = re.findall(r'<a href="#([^"]+)">([^<]+)</a>', nav.group(1))
    assert links == [("answer", "Answer"), ("plots", "Plots"), ("training-loss", "training loss"), ("runs", "Runs")]
    for anchor, _ in links:
        assert re.search(rf'<h[23] id="{anchor}">', page), anchor


def fake_report(content: bytes, wait=None, drawn=("curve.png",), pages=None):
    """A renderer that draws plots holding `content`, waits (for another build to be mid-way), then embeds its own
    plots in its HTML page (kept in `pages` by run id too), as study_report.render does."""
    from pathlib import Path

    from tasks.reporting.study_report import html

    def render_into(study: str, parent_run_id: str | None, out: Path):
        out.mkdir(parents=True, exist_ok=True)
        for name in drawn:
            (out / name).write_bytes(content)
        if wait:
            wait()
        text = f"# Study `{study}`\n\n" + "".join(f"![plot]({name})\n\n" for name in drawn)
        (out / "report.md").write_text(text)
        page = html(text, out, study)
        (out / "report.html").write_text(page)
        if pages is not None:
            pages[parent_run_id] = page
        return out / "report.md", parent_run_id

    return render_into


def test_two_builds_of_one_report_at_once_each_embed_their_own_plots_and_one_whole_report_is_left(tmp_path):
    """A cron execution and a manual one finishing together: neither reads nor deletes the other's half-drawn plots."""
    import base64
    import threading

    from tasks.reporting.study_report import rendered

    both_drawn = threading.Barrier(2, timeout=30)
    results, errors, pages = {}, [], {}

    def build(content: bytes, run_id: str):
        try:
            render = fake_report(content, both_drawn.wait, pages=pages)
            results[run_id] = rendered(render, "s", run_id, tmp_path / "s", log=False)
        except Exception as err:  # noqa: BLE001 -- surfaced by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=build, args=(c, r)) for c, r in ((b"first", "r1"), (b"second", "r2"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and sorted(results) == ["r1", "r2"]

    def embedded(page: str) -> bytes:
        return base64.b64decode(page.split("data:image/png;base64,")[1].split('"')[0])

    assert embedded(pages["r1"]) == b"first" and embedded(pages["r2"]) == b"second"  # each its own plot
    assert embedded((tmp_path / "s" / "report.html").read_text()) in (b"first", b"second")  # one whole page left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # no private folder left behind


def test_a_failed_build_leaves_the_last_report_whole_and_a_new_one_removes_plots_it_no_longer_draws(tmp_path):
    import pytest

    from tasks.reporting.study_report import rendered

    rendered(fake_report(b"old", drawn=("curve.png", "final.png")), "s", "r1", tmp_path / "s", log=False)

    def broken():
        raise RuntimeError("the store went away mid-build")

    with pytest.raises(RuntimeError, match="went away"):
        rendered(fake_report(b"new", broken), "s", "r2", tmp_path / "s", log=False)
    assert (tmp_path / "s" / "curve.png").read_bytes() == b"old" and (tmp_path / "s" / "report.md").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]

    rendered(fake_report(b"new", drawn=("curve.png",)), "s", "r3", tmp_path / "s", log=False)
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["curve.png", "report.html", "report.md"]
    assert (tmp_path / "s" / "curve.png").read_bytes() == b"new"
