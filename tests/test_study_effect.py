"""A study may declare the effects it cares about (`effect: {smallest, margin}`), on its metric's comparison scale;
the declaration reaches the comparison through the parent run, and older executions declare nothing."""

from types import SimpleNamespace

import pytest
import yaml
from conftest import REPO

from rnnlab.schemas.config import ConfigError
from rnnlab.schemas.study import StudyConfig, load_study, log_scale_metric
from tasks.analysis import stats
from tasks.analysis.compare import declared_effect
from tasks.record import tracking


def write_study(tmp_path, **fields):
    tree = {
        "study": "s",
        "base": str(REPO / "conf" / "runs" / "ptb_small.yaml"),
        "factors": {"model.cell": ["rnn_tanh", "lstm"]},
        **fields,
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def test_a_perplexity_study_declares_its_effects_as_ratios_above_one(tmp_path):
    study = load_study(write_study(tmp_path, effect={"smallest": 1.05, "margin": 1.02}))
    assert (study.config.effect.smallest, study.config.effect.margin) == (1.05, 1.02)
    assert yaml.safe_load(study.definition())["effect"] == {"smallest": 1.05, "margin": 1.02}  # logged as study.yaml
    with pytest.raises(
        ConfigError,
        match=r"effect.smallest=0.05: valid_ppl is compared as a ratio, so an effect is a "
        r"ratio above 1 \(e.g. 1.05 for 5%\)",
    ):
        load_study(write_study(tmp_path, effect={"smallest": 0.05}))
    with pytest.raises(ConfigError, match="effect.margin"):
        load_study(write_study(tmp_path, effect={"margin": -2}))


def test_a_bleu_study_declares_its_effects_in_points_and_nothing_is_required():
    tree = {
        "study": "s",
        "base": "b.yaml",
        "factors": {"model.attention": ["none", "dot"]},
        "metric": {"name": "valid_bleu_greedy", "goal": "max"},
    }
    assert StudyConfig.model_validate({**tree, "effect": {"smallest": 0.5}}).effect.smallest == 0.5  # half a point
    assert StudyConfig.model_validate(tree).effect.model_dump() == {"smallest": None, "margin": None}


def test_the_study_file_and_the_statistics_agree_on_which_metrics_are_ratios():
    for metric in ("valid_ppl", "test_ppl", "valid_bleu_greedy", "test_bleu", "test_chrf", "train_seconds"):
        assert log_scale_metric(metric) == stats.on_log_scale(metric), metric


def test_the_comparison_reads_the_declaration_the_flow_logs_on_the_parent_run():
    """flows/study.py open_study_run logs each study field as param `study.<field>`, written by param_value."""
    logged = {"study.effect": tracking.param_value({"smallest": 1.05, "margin": None})}
    assert declared_effect(SimpleNamespace(data=SimpleNamespace(params=logged))) == {
        "smallest_effect": 1.05,
        "margin": None,
    }
    older = SimpleNamespace(data=SimpleNamespace(params={"study.seeds": "[1, 2]"}))
    assert declared_effect(older) == {"smallest_effect": None, "margin": None}
