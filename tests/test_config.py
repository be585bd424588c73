"""A run is described by one validated config built from YAML + overrides; bad input fails naming the key."""

from pathlib import Path

import pydantic
import pytest
from conftest import REPO, RUN_CONFIG

from rnnlab.schemas import config
from rnnlab.schemas.config import ConfigError, RunConfig, known_keys

SHIPPED = sorted((REPO / "conf" / "runs").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_run_config_is_valid(path):
    assert isinstance(config.load(path), RunConfig)


def test_ptb_small_is_the_zaremba_small_recipe_with_mean_loss_scaling():
    cfg = config.load(RUN_CONFIG)
    assert (cfg.model.cell, cfg.model.layers, cfg.model.hidden_size, cfg.model.dropout) == ("lstm", 2, 200, 0.0)
    assert (cfg.train.bptt, cfg.train.batch_size, cfg.train.max_epochs) == (20, 20, 13)
    assert (cfg.train.optimizer, cfg.train.lr, cfg.train.clip_norm) == ("sgd", 20.0, 0.25)
    assert (cfg.train.lr_schedule, cfg.train.lr_decay, cfg.train.decay_after) == ("decay", 0.5, 4)
    assert cfg.model.init_range == 0.1


def test_overrides_use_dotted_keys_and_yaml_values():
    cfg = config.load(
        RUN_CONFIG, ["model.cell=rnn_tanh", "train.clip_norm=null", "train.lr=1e-3", "eval.splits=[valid]"]
    )
    assert cfg.model.cell == "rnn_tanh"
    assert cfg.train.clip_norm is None and cfg.train.clip is None
    assert cfg.train.lr == 0.001
    assert cfg.eval.splits == ("valid",)


def test_config_is_frozen():
    cfg = config.load(RUN_CONFIG)
    with pytest.raises(pydantic.ValidationError):  # frozen: assignment is refused
        cfg.train.lr = 1.0


def test_unknown_key_suggests_the_close_match():
    with pytest.raises(ConfigError, match=r"unknown key 'model.cel'; did you mean 'model.cell'\?"):
        config.load(RUN_CONFIG, ["model.cel=gru"])


def test_unknown_key_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  clip_nrom: 1.0\n")
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert str(path) in str(err.value)
    assert "did you mean 'train.clip_norm'" in str(err.value)


def test_wrong_type_names_key_and_value():
    with pytest.raises(ConfigError, match=r"train\.lr: .*valid number.*'fast'"):
        config.load(RUN_CONFIG, ["train.lr=fast"])


def test_invalid_choice_lists_the_allowed_values():
    with pytest.raises(ConfigError, match=r"model\.cell: .*'rnn_tanh', 'lstm' or 'gru'.*'transformer'"):
        config.load(RUN_CONFIG, ["model.cell=transformer"])


def test_out_of_range_value_is_rejected():
    with pytest.raises(ConfigError, match=r"model\.dropout: .*less than 1"):
        config.load(RUN_CONFIG, ["model.dropout=1.5"])


def test_bidirectional_language_model_is_rejected_because_it_sees_the_future():
    with pytest.raises(ConfigError, match=r"model.bidirectional=true is invalid for a language model.*see the future"):
        config.load(RUN_CONFIG, ["model.bidirectional=true"])


def test_tied_embeddings_need_equal_sizes():
    with pytest.raises(ConfigError, match=r"model.tied=true needs model.embedding_size == model.hidden_size"):
        config.load(RUN_CONFIG, ["model.tied=true", "model.hidden_size=300"])


def test_clipping_by_norm_and_by_value_together_is_rejected():
    with pytest.raises(ConfigError, match=r"choose one way of clipping"):
        config.load(RUN_CONFIG, ["train.clip_value=1.0"])
    assert config.load(RUN_CONFIG, ["train.clip_norm=null", "train.clip_value=1.0"]).train.clip == ("value", 1.0)


@pytest.mark.parametrize(
    "override, message",
    [
        ("train", "not of the form key=value"),
        ("model.cell.size=3", r"model\.cell: Input should be 'rnn_tanh', 'lstm' or 'gru' \(got \{'size': 3\}\)"),
        ("train.lr=[1", "not valid YAML"),
    ],
)
def test_malformed_overrides_are_explained(override, message):
    with pytest.raises(ConfigError, match=message):
        config.load(RUN_CONFIG, [override])


def test_missing_config_file_is_named():
    with pytest.raises(ConfigError, match=r"config file not found: .*nope.yaml"):
        config.load(Path("conf/runs/nope.yaml"))


def test_flat_params_use_the_same_dotted_names_as_overrides():
    cfg = config.load(RUN_CONFIG)
    flat = cfg.flat()
    assert set(flat) == set(known_keys())
    assert flat["train.clip_norm"] == 0.25 and flat["model.cell"] == "lstm"


def test_digest_identifies_the_resolved_config():
    a, b = config.load(RUN_CONFIG), config.load(RUN_CONFIG, ["train.lr=20"])
    assert a.digest() == b.digest()
    assert a.digest() != config.load(RUN_CONFIG, ["train.lr=10"]).digest()


def test_a_key_given_twice_is_refused_naming_its_lines_but_a_merged_key_may_be_overridden(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("train:\n  lr: 1\n  bptt: 5\n  lr: 2\n")
    with pytest.raises(ConfigError, match=r"twice.yaml: not valid YAML: key 'lr' is given twice, on lines 2 and 4"):
        config.load(path)
    path.write_text("x: &fast {lr: 1, bptt: 5}\ntrain:\n  <<: *fast\n  lr: 2\n")
    assert config.read_yaml(path)["train"] == {"lr": 2, "bptt": 5}


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_numbers_must_be_finite(value):
    got = value.replace(".", "")  # inf, -inf, nan
    with pytest.raises(ConfigError, match=rf"train\.lr: Input should be a finite number \(got {got}\)"):
        config.load(RUN_CONFIG, [f"train.lr={value}"])


def test_a_language_models_training_order_is_shuffled_unless_fixed_and_is_part_of_its_identity():
    shuffled, fixed = config.load(RUN_CONFIG), config.load(RUN_CONFIG, ["data.order=fixed"])
    assert shuffled.data.order == "shuffled" and fixed.data.order == "fixed"
    assert shuffled.flat()["data.order"] == "shuffled"  # logged as a param like every key
    assert shuffled.digest() != fixed.digest()  # a study cell with another order is another cell
    with pytest.raises(ConfigError, match=r"data\.order: Input should be 'shuffled' or 'fixed' \(got 'random'\)"):
        config.load(RUN_CONFIG, ["data.order=random"])
