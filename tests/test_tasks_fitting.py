"""The shared fitting floor on tiny real data (through the language-model wing): truncated BPTT, clipping with the
pre-clip norm logged, schedules, seeds, checkpoints, the blow-up rule, resuming."""

import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from models.lm import LanguageModel
from tasks.data.lm_corpus import prepare_lm_corpus
from tasks.kinds.lm import fit_lm, segment_loader
from tasks.record import tracking
from tasks.training.fitting import load_weights


def fit(cfg, callbacks=()):
    """fit_lm with extra callbacks attached to the Trainer it builds."""
    corpus = prepare_lm_corpus(cfg.data)
    run_id = tracking.open_run(cfg.experiment, None, cfg.flat(), {})
    original = pl.Trainer.__init__

    def with_callbacks(self, *args, **kwargs):
        kwargs["callbacks"] = [*kwargs["callbacks"], *callbacks]
        original(self, *args, **kwargs)

    pl.Trainer.__init__ = with_callbacks
    try:
        return run_id, fit_lm(cfg, corpus, run_id)
    finally:
        pl.Trainer.__init__ = original


def history(run_id, key):
    return [m.value for m in sorted(tracking.client().get_metric_history(run_id, key), key=lambda m: m.step)]


class Recorder(pl.Callback):
    """Gradients as the optimizer sees them (after clipping) and the state each segment starts from."""

    def __init__(self):
        self.post_clip_norms, self.max_abs_grads, self.start_states = [], [], []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        state = module._train_hidden
        self.start_states.append(None if state is None else [tuple(t.clone() for t in h) for h in state])

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):  # grads are zeroed at the next step
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        self.post_clip_norms.append(float(torch.nn.utils.get_total_norm(grads)))
        self.max_abs_grads.append(max(float(g.abs().max()) for g in grads))


def test_hidden_state_is_carried_across_segments_and_reset_each_epoch(tiny_cfg):
    recorder = Recorder()
    cfg = tiny_cfg("train.max_epochs=2", "train.clip_norm=null")
    fit(cfg, [recorder])
    steps_per_epoch = len(segment_loader(prepare_lm_corpus(cfg.data).load("train"), 0, 4, 8, pad=False))
    starts = recorder.start_states
    assert starts[0] is None and starts[steps_per_epoch] is None  # fresh state at each epoch start
    assert all(s is not None for s in starts[1:steps_per_epoch])
    assert all(not t.requires_grad for t in starts[1][0])  # detached: gradients stop at the segment boundary


def test_clipping_by_norm_logs_the_pre_clip_norm_and_bounds_the_applied_gradient(tiny_cfg):
    recorder = Recorder()
    run_id, result = fit(tiny_cfg("train.clip_norm=0.01"), [recorder])
    pre_clip = history(run_id, "train/grad_norm")
    assert len(pre_clip) == result.steps  # logged every step
    assert min(pre_clip) > 0.01
    assert max(recorder.post_clip_norms) == pytest.approx(0.01, rel=1e-4)
    assert history(run_id, "clipped_share")[-1] == 1.0
    assert tracking.client().get_run(run_id).data.metrics["max_grad_norm"] == pytest.approx(max(pre_clip))


def test_without_clipping_the_optimizer_sees_the_raw_gradient(tiny_cfg):
    recorder = Recorder()
    run_id, _ = fit(tiny_cfg("train.clip_norm=null"), [recorder])
    assert recorder.post_clip_norms == pytest.approx(history(run_id, "train/grad_norm"), rel=1e-5)
    assert history(run_id, "clipped_share")[-1] == 0.0


class LayerRecorder(pl.Callback):
    """Each recurrent layer's raw gradient norm at every step (with clipping off, what the optimizer sees)."""

    def __init__(self):
        self.norms: list[list[float]] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.norms.append(
            [float(torch.nn.utils.get_total_norm([p.grad for p in layer.parameters()])) for layer in module.net.layers]
        )


def test_each_recurrent_layer_logs_its_own_pre_clip_gradient_norm_every_50_steps_and_its_mean(tiny_cfg):
    recorder = LayerRecorder()
    run_id, result = fit(tiny_cfg("model.layers=3", "train.clip_norm=null"), [recorder])
    assert result.steps > 100  # so that more than one sampled step is compared
    sampled = list(range(0, result.steps, 50))  # steps 1, 51, 101, …, logged at global steps 0, 50, 100, …
    metrics = tracking.client().get_run(run_id).data.metrics
    for layer in range(3):
        logged = tracking.metric_history(run_id, f"train/grad_norm_layer{layer}")
        assert [step for step, _ in logged] == sampled  # a summary per layer, not one per step
        assert [v for _, v in logged] == pytest.approx([recorder.norms[s][layer] for s in sampled], rel=1e-5)
        assert metrics[f"grad_norm_layer{layer}_mean"] == pytest.approx(sum(v for _, v in logged) / len(logged))
    total = dict(tracking.metric_history(run_id, "train/grad_norm"))
    for step in sampled:  # the layers' norms are parts of the total (which also holds the embedding and decoder)
        parts = [recorder.norms[step][layer] for layer in range(3)]
        assert math.sqrt(sum(p * p for p in parts)) <= total[step] * (1 + 1e-5)
    assert "train/grad_norm_layer3" not in metrics and "grad_norm_layer3_mean" not in metrics


def test_a_translator_logs_its_encoder_and_decoder_layers_by_name():
    from models.seq2seq import Translator
    from tasks.training.fitting import recurrent_layers

    shape = {"src_vocab": 20, "tgt_vocab": 20, "embedding_size": 8, "hidden_size": 12, "layers": 2}
    layers = recurrent_layers(Translator(shape, {"optimizer": "adam", "lr": 1e-3}))
    assert list(layers) == ["encoder_layer0", "encoder_layer1", "decoder_layer0", "decoder_layer1"]
    assert all(layers.values())


def test_clipping_by_value_bounds_every_gradient_element(tiny_cfg):
    recorder = Recorder()
    run_id, _ = fit(tiny_cfg("train.clip_norm=null", "train.clip_value=0.001"), [recorder])
    assert max(recorder.max_abs_grads) <= 0.001 + 1e-9
    assert history(run_id, "clipped_share")[-1] == 1.0


def test_lr_is_halved_each_epoch_after_decay_after(tiny_cfg):
    run_id, _ = fit(tiny_cfg("train.max_epochs=4", "train.decay_after=2", "train.lr_decay=0.5", "train.lr=1.0"))
    lrs = sorted(set(history(run_id, "train/lr")), reverse=True)
    assert lrs == [1.0, 0.5, 0.25]


def test_plateau_schedule_divides_lr_when_validation_stops_improving():
    module = LanguageModel(10, {"hidden_size": 4, "embedding_size": 4}, {"lr_schedule": "plateau", "lr_decay": 0.25})
    config = module.configure_optimizers()
    scheduler = config["lr_scheduler"]["scheduler"]
    assert config["lr_scheduler"]["monitor"] == "valid_nll"  # log perplexity: the same order, never overflows
    scheduler.step(5.0)
    scheduler.step(4.5)
    assert config["optimizer"].param_groups[0]["lr"] == 20.0
    scheduler.step(4.7)
    assert config["optimizer"].param_groups[0]["lr"] == 5.0


def test_adam_is_available():
    module = LanguageModel(
        10, {"hidden_size": 4, "embedding_size": 4}, {"optimizer": "adam", "lr": 1e-3, "lr_schedule": "constant"}
    )
    assert isinstance(module.configure_optimizers(), torch.optim.Adam)


def test_same_seed_same_run_and_another_seed_another(tiny_cfg):
    runs = [fit(tiny_cfg(f"seed={seed}", "train.max_epochs=1")) for seed in (7, 7, 8)]
    losses = [history(run_id, "train/loss") for run_id, _ in runs]
    assert losses[0] == losses[1]
    assert losses[0] != losses[2]
    weights = [load_weights(result.checkpoint) for _, result in runs]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_max_steps_bounds_training_and_checkpoints_load_weights_only(tiny_cfg):
    run_id, result = fit(tiny_cfg("train.max_steps=5", "train.max_epochs=50"))
    assert result.steps == 5
    state = torch.load(result.checkpoint, weights_only=True)
    assert state["global_step"] == 5


def test_best_and_last_checkpoints_and_validation_every_epoch(tiny_cfg):
    run_id, result = fit(tiny_cfg("train.max_epochs=3"))
    assert result.checkpoint.endswith("best.ckpt")
    assert (Path(result.checkpoint).parent / "last.ckpt").exists()
    valid = history(run_id, "valid/ppl")
    assert len(valid) == 3 and all(math.isfinite(v) for v in valid)
    best_epoch = torch.load(result.checkpoint, weights_only=True)["epoch"]
    assert valid[best_epoch] == min(valid)


def test_the_selected_checkpoint_carries_the_losses_its_validation_measured_so_scoring_need_not_repeat_it(tiny_cfg):
    from tasks.kinds.lm import eos_index, load_net, token_losses, validated_losses

    cfg = tiny_cfg("train.max_epochs=3")
    run_id, result = fit(cfg)
    corpus = prepare_lm_corpus(cfg.data)
    ids = corpus.load("valid")
    carried = validated_losses(result.checkpoint, len(ids))
    again = token_losses(
        load_net(cfg, corpus.vocab_size, result.checkpoint), ids, eos_index(corpus), cfg.eval.batch_size, cfg.train.bptt
    )
    assert carried is not None and torch.equal(carried, again)  # bit for bit: the same pass over the same weights
    assert math.isclose(math.exp(float(carried.mean())), min(history(run_id, "valid/ppl")), rel_tol=1e-5)
    assert validated_losses(result.checkpoint, len(ids) + 1) is None  # another split's length: measured again


def test_a_diverging_run_stops_and_records_the_step(tiny_cfg):
    run_id, result = fit(
        tiny_cfg("train.clip_norm=null", "train.lr=1e38", "model.cell=rnn_tanh", "model.init_range=1.0")
    )
    assert result.diverged_at is not None and result.diverged_at < result.steps + 1
    assert result.stop_reason.startswith("the training loss became ")  # inf or nan
    run = tracking.client().get_run(run_id)
    assert run.data.metrics["diverged_step"] == result.diverged_at
    from tasks.kinds.lm import validated_losses

    state = torch.load(result.checkpoint, weights_only=True)  # no validation as it stopped: the weights it ended with
    assert state["global_step"] == result.steps and validated_losses(result.checkpoint, 10**6) is None


def test_a_run_whose_loss_stays_far_above_a_uniform_guess_is_stopped_by_the_blow_up_rule(tiny_cfg):
    """Huge initial weights and an lr too small to fix them: the loss stays far above ln(V) from the first step."""
    cfg = tiny_cfg(
        "train.lr=1e-9",
        "model.init_range=3.0",
        "train.blowup_after=2",
        "train.blowup_window=3",
        "train.blowup_ratio=1.5",
        "train.max_epochs=3",
    )
    run_id, result = fit(cfg)
    assert result.diverged_at == 5 == result.steps  # 2 warm-up steps + a window of 3, and not one step more
    assert result.stop_reason.startswith("blew up: the mean training loss over steps 3–5 was")
    assert "1.5 × " in result.stop_reason and "(a uniform guess)" in result.stop_reason
    assert tracking.client().get_run(run_id).data.metrics["diverged_step"] == 5
    # no validation of the rejected model as it stops (Lightning's pass at a stop): it is no point of the curve
    assert history(run_id, "valid/ppl") == [] and history(run_id, "valid/nll") == []
    healthy = fit(tiny_cfg("train.blowup_after=2", "train.blowup_window=3", "train.max_epochs=1"))[1]
    assert healthy.diverged_at is None and healthy.stop_reason is None  # the same rule leaves a sane run alone


class FakeTrainer:
    def __init__(self):
        self.global_step, self.should_stop = 0, False
        self.limit_val_batches = 1.0
        self.logger = type("Logger", (), {"log_metrics": lambda *a, **k: None})()


@pytest.mark.parametrize(
    "losses, stop_at",
    [
        ([5.0] * 40, None),  # above the uniform loss (ln 100 = 4.6) but not 1.5 times it (6.9): never stopped
        ([5.0] * 10 + [7.5] * 30, 18),  # the mean of steps 9-18 is 7.0: the first window above 6.9
        ([5.0] * 20 + [20.0] + [5.0] * 19, None),  # one spike: its window's mean, 6.5, stays below 6.9
        ([50.0] * 40, 15),  # blown up from the start: stopped as soon as warm-up (5) and one window (10) are past
    ],
)
def test_the_blow_up_rule_watches_the_mean_loss_over_a_window_after_warm_up(losses, stop_at):
    from tasks.training.fitting import TrainingLoss

    rule = TrainingLoss(math.log(100), ratio=1.5, window=10, after=5)
    trainer = FakeTrainer()
    for loss in losses:
        trainer.global_step += 1
        rule.on_train_batch_end(trainer, None, torch.tensor(loss), None, 0)
        if trainer.should_stop:
            break
    assert rule.stopped_at == stop_at and trainer.should_stop == (stop_at is not None)
    assert (trainer.limit_val_batches == 0) == (stop_at is not None)  # the rejected model is not validated as it stops
    if stop_at:
        assert rule.stop_reason.startswith(f"blew up: the mean training loss over steps {stop_at - 9}–{stop_at}")


def test_a_checkpoint_cut_off_mid_write_is_set_aside_instead_of_resumed(tmp_path):
    from tasks.training.fitting import resumable

    broken = tmp_path / "last.ckpt"
    broken.write_bytes(b"PK\x03\x04 half a zip file")
    assert resumable(broken, "cell") is None
    assert not broken.exists() and (tmp_path / "last.unreadable").exists()
    assert resumable(tmp_path / "missing.ckpt", "cell") is None


def test_a_checkpoint_that_does_not_fit_the_model_is_set_aside_instead_of_resumed(tmp_path, capsys):
    from tasks.training.fitting import resumable

    model = LanguageModel(10, {"hidden_size": 4, "embedding_size": 4}, {})
    checkpoint = tmp_path / "last.ckpt"
    torch.save({"global_step": 3, "state_dict": model.state_dict()}, checkpoint)
    assert resumable(checkpoint, "cell", model) == (str(checkpoint), 3)  # fits: resumed

    wider = LanguageModel(10, {"hidden_size": 8, "embedding_size": 4}, {})
    assert resumable(checkpoint, "cell", wider) is None
    assert not checkpoint.exists() and (tmp_path / "last.misfit").exists()
    line = capsys.readouterr().err.splitlines()[-1]
    assert line.startswith(f"rnnlab: cell: cannot resume from {checkpoint} (its weights do not fit the model: ")
    assert "is [16, 4], the model's is [32, 4]" in line and line.endswith("; set aside as last.misfit, starting again")

    torch.save({"global_step": 3, "state_dict": {**model.state_dict(), "net.extra.weight": torch.zeros(2)}}, checkpoint)
    assert resumable(checkpoint, "cell", model) is None
    assert "(its weights do not fit the model: net.extra.weight is not in the model)" in capsys.readouterr().err
    torch.save(
        {"global_step": 3, "state_dict": {k: v for k, v in model.state_dict().items() if "decoder" not in k}},
        checkpoint,
    )
    assert resumable(checkpoint, "cell", model) is None
    assert "net.decoder.weight is missing (and 1 more)" in capsys.readouterr().err


def test_a_resumed_run_reports_the_time_and_tokens_of_its_whole_training(tiny_cfg, tmp_path):
    """One epoch, then the same cell again with two: the second fit resumes from the first's last checkpoint."""
    corpus = prepare_lm_corpus(tiny_cfg().data)
    first_cfg, second_cfg = tiny_cfg("train.max_epochs=1"), tiny_cfg("train.max_epochs=2")
    workdir = tmp_path / "cell"
    first = fit_lm(first_cfg, corpus, tracking.open_run("tests", None, first_cfg.flat(), {}), str(workdir))
    second = fit_lm(second_cfg, corpus, tracking.open_run("tests", None, second_cfg.flat(), {}), str(workdir))
    assert second.steps == 2 * first.steps  # resumed, not started again
    saved = torch.load(workdir / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]["Progress"]
    assert second.train_seconds == saved["train_seconds"] > first.train_seconds
    tokens_per_epoch = len(corpus.load("train")) // 4 * 4  # train.batch_size=4 columns, remainder trimmed
    assert saved["tokens"] == 2 * tokens_per_epoch
    assert second.tokens_per_second * second.train_seconds == pytest.approx(2 * tokens_per_epoch)


def test_a_cell_whose_config_changed_trains_again_from_the_start(tiny_cfg, tmp_path, capfd):
    corpus = prepare_lm_corpus(tiny_cfg().data)
    narrow, wide = tiny_cfg("train.max_epochs=1"), tiny_cfg("train.max_epochs=1", "model.hidden_size=24")
    workdir = tmp_path / "cell"
    first = fit_lm(narrow, corpus, tracking.open_run("tests", None, narrow.flat(), {}), str(workdir))
    again = fit_lm(wide, corpus, tracking.open_run("tests", None, wide.flat(), {}), str(workdir))
    assert again.steps == first.steps  # one whole epoch, from step 0
    assert "its weights do not fit the model" in capfd.readouterr().err
    assert (workdir / "checkpoints" / "last.misfit").exists()


# In a fresh interpreter: the flag must be set before torch starts its threads, as in a study's worker.
DENORMALS = """
import sys, threading
import torch
sys.path.insert(0, {repo!r})
if {flush}:
    from rnnlab.schemas import config
    from tasks.training.fitting import seed_and_threads
    seed_and_threads(config.load({repo!r} + "/conf/runs/ptb_small.yaml", ["train.num_threads=2"]))
else:
    torch.set_num_threads(2)
# The smallest positive float32 (1.4e-45), made from its bits: a denormal however the flag is set.
tiny = torch.ones(1 << 21, dtype=torch.int32).view(torch.float32)
doubled = tiny * 2  # big enough that torch splits it across its 2 threads
seen = []
thread = threading.Thread(target=lambda: seen.append(float((tiny[:1] * 2).item())))
thread.start(); thread.join()
print(int(torch.count_nonzero(doubled)), seen[0])
"""


@pytest.mark.parametrize("flush", [True, False])
def test_a_fit_flushes_denormal_floats_to_zero_in_every_thread_it_computes_in(flush):
    """A saturated network's gradients underflow into denormals, which the CPU computes ~10x slower
    (benchmarks/bench_denormals.py); a fit flushes them to zero in torch's threads and in threads started later.
    Without the flag (the control) they survive: the check can tell the two apart."""
    import subprocess
    import sys

    code = DENORMALS.format(repo=str(Path(__file__).resolve().parent.parent), flush=flush)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    nonzero, in_new_thread = done.stdout.split()
    if flush:
        assert (int(nonzero), float(in_new_thread)) == (0, 0.0)
    else:
        assert int(nonzero) == 1 << 21 and float(in_new_thread) > 0
