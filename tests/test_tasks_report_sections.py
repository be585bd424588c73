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
