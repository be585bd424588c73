"""train.precision: bf16-mixed through Lightning's precision plugin where the machine runs it, refused before
anything is recorded, naming what the machine offers, where it does not. Weights, gradients, clipping, the loss and
the evaluation stay fp32 whatever the precision."""

import json
import math

import pytest
import torch
from test_flows_nmt import reversal, reversal_cfg  # noqa: F401  (a fixture)
from test_flows_study import rnnlab, store
from test_tasks_fitting import fit, history

from rnnlab.schemas.config import ConfigError
from tasks.record import hardware, tracking

runs_bf16 = pytest.mark.skipif(
    not hardware.cpu_runs_bf16(), reason=f"this CPU cannot run torch's bf16 kernels ({hardware.cpu_offers()})"
)


def test_a_precision_lightning_has_but_rnnlab_does_not_offer_is_refused_naming_the_choices(tiny_cfg):
    with pytest.raises(ConfigError, match=r"train\.precision.*'32-true'.*'bf16-mixed'.*16-mixed"):
        tiny_cfg("train.precision=16-mixed")


def test_bf16_where_torch_cannot_run_it_is_refused_naming_what_the_cpu_offers(tiny_cfg, monkeypatch):
    monkeypatch.setattr(hardware, "cpu_runs_bf16", lambda: False)  # an AVX2-only CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError) as refused:
        hardware.check_runnable(tiny_cfg("train.precision=bf16-mixed"), "cell lstm s1: ")
    message = str(refused.value)
    assert message.startswith("cell lstm s1: train.precision=bf16-mixed: this CPU cannot run torch's bf16 kernels")
    assert f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}; bf16 instructions: " in message
    assert message.endswith("use train.precision=32-true")
    assert hardware.check_runnable(tiny_cfg()) is None  # fp32 runs anywhere


def test_bf16_emulated_by_a_cpu_without_bf16_instructions_runs_with_a_warning(tiny_cfg, monkeypatch):
    monkeypatch.setattr(hardware, "cpu_runs_bf16", lambda: True)  # AVX-512 without AVX512_BF16 or AMX
    monkeypatch.setattr(hardware, "native_bf16", lambda: [])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    warning = hardware.check_runnable(tiny_cfg("train.precision=bf16-mixed"))
    assert warning.startswith("rnnlab: warning: train.precision=bf16-mixed on a CPU without bf16 instructions")
    assert "emulated" in warning


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_a_gpu_run_on_a_machine_without_one_fails_in_one_line_before_anything_is_recorded(tiny_corpus, tmp_path):
    done = rnnlab(
        "train", "conf/runs/ptb_small.yaml", f"data.corpus={tiny_corpus}", "train.accelerator=gpu", home=tmp_path
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"rnnlab: error: train.accelerator=gpu: torch {torch.__version__} (a CPU-only build) sees no CUDA device on "
        "this machine; use train.accelerator=cpu (or auto: a GPU where there is one)"
    ]
    assert not (tmp_path / "mlruns" / "mlflow.db").exists() or not store(tmp_path).search_runs(
        [e.experiment_id for e in store(tmp_path).search_experiments()]
    )


@runs_bf16
def test_a_bf16_language_model_trains_like_fp32_with_fp32_weights_gradients_and_evaluation(tiny_cfg):
    (fp32_run, fp32), (bf16_run, bf16) = (
        fit(tiny_cfg("train.max_epochs=3", f"train.precision={p}")) for p in ("32-true", "bf16-mixed")
    )
    run = tracking.client().get_run(bf16_run)
    assert run.data.params["train.precision"] == "bf16-mixed"  # a param, and part of the cell's identity
    weights = torch.load(bf16.checkpoint, weights_only=True)["state_dict"]
    assert {t.dtype for t in weights.values()} == {torch.float32}  # master weights stay fp32
    norms = history(bf16_run, "train/grad_norm")
    assert norms and all(math.isfinite(n) for n in norms)  # pre-clip norms of fp32 gradients
    # the same model learns the same: validation perplexity within 2% of fp32's at every epoch
    for mixed, full in zip(history(bf16_run, "valid/ppl"), history(fp32_run, "valid/ppl"), strict=True):
        assert mixed == pytest.approx(full, rel=0.02)


@runs_bf16
def test_a_bf16_translation_model_learns_to_reverse_sentences(prefect_server, reversal):  # noqa: F811
    from flows.train import train_flow

    result = train_flow(reversal_cfg(reversal, "model.attention=dot", "train.precision=bf16-mixed"))
    assert result["outcome"] == "trained"
    assert result["metrics"]["test_bleu"] > 90  # as fp32 does in the same budget (test_flows_nmt)
    params = tracking.client().get_run(result["run_id"]).data.params
    assert params["train.precision"] == "bf16-mixed" and json.loads(params["model.bidirectional"]) is True


def test_the_report_lists_the_precision_and_warns_when_cells_differ_in_it_without_it_being_a_factor():
    from types import SimpleNamespace

    import pandas as pd

    from tasks.reporting.study_report import environment_section

    def parent(params):
        return SimpleNamespace(info=SimpleNamespace(run_id="p1"), data=SimpleNamespace(params=params))

    one = pd.DataFrame({"params.train.precision": ["bf16-mixed"] * 2, "tags.cpu.bf16": ["avx512_bf16"] * 2})
    text = environment_section(one, parent({}))
    assert "| training precision" in text and "`bf16-mixed`" in text and "`avx512_bf16`" in text
    assert "Warning" not in text
    mixed = pd.DataFrame({"params.train.precision": ["bf16-mixed", "32-true"]})
    assert (
        "trained in different precisions (32-true, bf16-mixed), and precision is not one of its factors"
        in environment_section(mixed, parent({}))
    )
    assert "different precisions" not in environment_section(mixed, parent({"grid.train.precision": "[...]"}))
    recorded_before = pd.DataFrame({"tags.cpu": ["x"]})  # runs from before precision was a setting: fp32
    assert "`32-true`" in environment_section(recorded_before, parent({}))
