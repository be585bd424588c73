"""A study file expands into its grid of fully validated run configs, or fails naming the offending cell."""

from pathlib import Path

import pytest
import yaml
from conftest import REPO

from rnnlab.schemas.config import ConfigError
from rnnlab.schemas.study import load_study

STUDIES = REPO / "conf" / "studies"


def write_study(tmp_path: Path, **fields) -> Path:
    tree = {
        "study": "s",
        "base": str(REPO / "conf" / "runs" / "ptb_small.yaml"),
        "factors": {"model.cell": ["rnn_tanh", "lstm"], "train.clip_norm": [None, 0.25]},
        **fields,
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


@pytest.mark.parametrize("name", ["quick", "lm_clipping", "lm_residual", "nmt_bidirectional"])
def test_every_shipped_study_expands_into_valid_cells(name):
    study = load_study(STUDIES / f"{name}.yaml")
    assert len(study.cells) == len(study.variants) * len(study.config.seeds) >= 8
    assert all(cell.config.experiment == name for cell in study.cells)


def test_the_grid_is_the_product_of_factors_minus_exclusions_times_seeds(tmp_path):
    study = load_study(write_study(tmp_path, seeds=[1, 2], exclude=[{"model.cell": "lstm", "train.clip_norm": None}]))
    assert study.variants == [
        "cell=rnn_tanh,clip_norm=null",
        "cell=rnn_tanh,clip_norm=0.25",
        "cell=lstm,clip_norm=0.25",
    ]
    assert [(c.config.model.cell, c.config.train.clip_norm, c.seed, c.config.seed) for c in study.cells[:2]] == [
        ("rnn_tanh", None, 1, 1),
        ("rnn_tanh", None, 2, 2),
    ]
    assert study.cells[0].config.run_name == "rnn_tanh clip=null s1"


@pytest.mark.parametrize(
    "name, first_names",
    [
        ("lm_clipping", ["rnn_tanh clip=null lr=3.0 s1", "rnn_tanh clip=null lr=20.0 s1"]),
        ("lm_residual", ["layers=2 res=false s1", "layers=2 res=true s1"]),
        ("nmt_bidirectional", ["bidir=false attn=none s1", "bidir=false attn=dot s1"]),
        ("lm_cells", ["rnn_tanh s1", "gru s1"]),
    ],
)
def test_runs_are_named_variant_first_short_and_unique_within_the_study(name, first_names):
    """A runs table cuts names at ~20 characters: what tells variants apart comes first; a cell type needs no key,
    a bare number or a `none` does."""
    study = load_study(STUDIES / f"{name}.yaml")
    names = [cell.config.run_name for cell in study.cells]
    assert [n for n in names if n.endswith(" s1")][:2] == first_names
    assert len(set(names)) == len(names)
    assert all(cell.config.run_name == f"{cell.label} s{cell.seed}" for cell in study.cells)
    assert len({cell.label for cell in study.cells}) == len(study.variants)


def test_overrides_go_to_the_study_or_to_every_cell_and_the_budget_applies(tmp_path):
    path = write_study(tmp_path, overrides={"train.lr": 1.0}, budget={"max_steps": 30})
    study = load_study(path, ["seeds=[3,4,5]", "concurrency=1", "train.max_epochs=2", "model.hidden_size=50"])
    assert study.config.seeds == [3, 4, 5] and study.config.concurrency == 1
    train, model = study.cells[0].config.train, study.cells[0].config.model
    assert (train.lr, train.max_steps, train.max_epochs, model.hidden_size) == (1.0, 30, 2, 50)


def test_the_same_cell_has_the_same_identity_and_a_different_seed_does_not(tmp_path):
    a, b = load_study(write_study(tmp_path, seeds=[1, 2])), load_study(write_study(tmp_path, seeds=[1, 2]))
    assert a.cells[0].config.digest() == b.cells[0].config.digest() != a.cells[1].config.digest()


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"factors": {"model.cel": ["lstm"]}}, "cell cel=lstm (seed 1)"),
        ({"factors": {"model.cel": ["lstm"]}}, "did you mean 'model.cell'?"),
        ({"factors": {"model.cell": []}}, "factor 'model.cell' has an empty list of values"),
        ({"factors": {}}, "at least one factor"),
        ({"factors": {"train.clip_norm": [0.25, "abc"]}}, "cell clip_norm=abc (seed 1)"),
        ({"factors": {"model.bidirectional": [False, True]}}, "cell bidirectional=true (seed 1)"),
        ({"factors": {"model.bidirectional": [True]}}, "would see the future"),
        ({"seeds": []}, "seeds"),
        ({"concurrency": 0}, "concurrency"),
        ({"exclude": [{"model.layers": 2}]}, "not factors: ['model.layers']"),
        ({"exclude": [{"model.cell": "rnn_tanh"}, {"model.cell": "lstm"}]}, "the grid is empty"),
        ({"factor": {"model.cell": ["lstm"]}}, "unknown key 'factor'; did you mean 'factors'?"),
    ],
)
def test_a_bad_study_fails_before_training_naming_the_problem(tmp_path, fields, message):
    with pytest.raises(ConfigError, match=None) as err:
        load_study(write_study(tmp_path, **fields))
    assert message in str(err.value)


def test_a_command_line_override_of_a_factor_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="model.cell is a factor of this study"):
        load_study(write_study(tmp_path), ["model.cell=gru"])


def test_runner_shorthand_and_its_address_from_the_command_line(tmp_path):
    study = load_study(write_study(tmp_path), ["runner=dask", "runner.address=tcp://127.0.0.1:8786"])
    assert (study.config.runner.kind, study.config.runner.address) == ("dask", "tcp://127.0.0.1:8786")
    assert load_study(write_study(tmp_path)).config.runner.kind == "process"


def test_the_shipped_schedules_name_valid_studies_and_crons():
    from flows.deploy import load_schedules

    schedules = load_schedules(REPO / "conf" / "schedules.yaml")
    assert [s.name for s, _ in schedules] == ["lm_clipping-nightly", "quick-daily"]
    assert all(path.is_file() for _, path in schedules)


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"cron": "every night"}, "cron 'every night'"),
        ({"timezone": "Mars/Olympus"}, "timezone 'Mars/Olympus'"),
        ({"study": "missing.yaml"}, "config file not found"),
    ],
)
def test_a_bad_schedule_fails_naming_the_deployment_and_the_problem(tmp_path, entry, message):
    from flows.deploy import load_schedules

    study = write_study(tmp_path)
    path = tmp_path / "schedules.yaml"
    path.write_text(yaml.safe_dump({"deployments": [{"name": "n", "study": study.name, "cron": "0 2 * * *", **entry}]}))
    with pytest.raises(ConfigError) as err:
        load_schedules(path)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "name, overrides, allowed",
    [
        ("valid_ppl", [], True),
        ("train_seconds", [], True),
        ("valid_pplx", [], False),
        ("test_bleu", [], False),  # a translation metric; these runs model language
    ],
)
def test_a_study_is_decided_by_a_metric_its_runs_log(tmp_path, name, overrides, allowed):
    path = write_study(tmp_path, metric={"name": name})
    if allowed:
        assert load_study(path, overrides).config.metric.name == name
    else:
        with pytest.raises(ConfigError, match=rf"metric.name='{name}' is not a metric .* choose one of: valid_ppl, "):
            load_study(path, overrides)


def test_a_study_decides_on_validation_data_and_holds_the_test_split_out(tmp_path):
    """Cells are scored on valid only; deciding on a test score, or asking cells to score test, is refused before
    anything runs: the test split is scored once, after the decision (tasks/analysis/held_out.py)."""
    study = load_study(write_study(tmp_path))
    assert {cell.config.eval.splits for cell in study.cells} == {("valid",)}
    with pytest.raises(ConfigError, match=r"metric.name='test_ppl' is a test score.*decide on 'valid_ppl' instead"):
        load_study(write_study(tmp_path, metric={"name": "test_ppl"}))
    with pytest.raises(
        ConfigError,
        match=r"'eval.splits' cannot be overridden: a study scores every cell on the "
        r"validation split",
    ):
        load_study(write_study(tmp_path), ["eval.splits=[valid,test]"])


def test_a_study_is_read_afresh_at_each_load(tmp_path):
    """No process cache stands between a study file and its loads (a command loads it once and hands it on:
    tests/test_load_once.py): a file edited between two loads gives the edited cells."""
    path = write_study(tmp_path, seeds=[1, 2])
    assert [c.seed for c in load_study(path, ["concurrency=1"]).cells[:2]] == [1, 2]
    write_study(tmp_path, seeds=[1, 3])
    assert [c.seed for c in load_study(path, ["concurrency=1"]).cells[:2]] == [1, 3]
