"""Translation end to end on tiny data: subwords, a model that truly learns, beam vs greedy, sacreBLEU, the CLI."""

import json
import random
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, rnnlab_command

from rnnlab.schemas import config
from tasks.record import tracking

WORDS = "red green blue black white small big old young tall short happy".split()
NMT_CONFIG = REPO / "conf" / "runs" / "multi30k_deen.yaml"


def write_reversal_corpus(root: Path, seed: int = 0) -> Path:
    """Source: 3–7 random words; target: the same words in reverse order."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 3000), ("valid", 100), ("test", 100)):
        sources = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 7))) for _ in range(n)]
        (root / f"{split}.src").write_text("".join(s + "\n" for s in sources))
        (root / f"{split}.tgt").write_text("".join(" ".join(reversed(s.split())) + "\n" for s in sources))
    return root


@pytest.fixture(scope="module")
def reversal(tmp_path_factory) -> Path:
    return write_reversal_corpus(tmp_path_factory.mktemp("reversal") / "corpus")


def reversal_cfg(corpus: Path, *overrides: str):
    return config.load(
        NMT_CONFIG,
        [
            f"data.corpus={corpus}",
            "data.src=src",
            "data.tgt=tgt",
            "data.vocab_size=40",
            "model.embedding_size=32",
            "model.hidden_size=64",
            "model.dropout=0.0",
            "train.batch_size=50",
            "train.lr=0.005",
            "train.max_epochs=5",
            "train.lr_schedule=constant",
            "train.label_smoothing=0.0",
            "train.num_threads=1",
            "eval.beam=3",
            "experiment=reversal",
            *overrides,
        ],
    )


@pytest.fixture(scope="module")
def learned(prefect_server, reversal):
    """The same budget with and without attention (runs once for the module)."""
    from flows.train import train_flow

    return {
        attention: train_flow(reversal_cfg(reversal, f"model.attention={attention}", f"run_name={attention}"))
        for attention in ("dot", "none")
    }


def test_the_model_learns_to_reverse_sentences_and_attention_learns_faster(learned):
    with_attention, without = learned["dot"]["metrics"], learned["none"]["metrics"]
    assert with_attention["test_bleu"] > 90
    assert with_attention["test_bleu"] > without["test_bleu"] + 10
    assert with_attention["test_ppl"] < without["test_ppl"]


def test_a_translation_run_records_signatures_translations_and_subword_models(learned):
    run_id = learned["dot"]["run_id"]
    run = tracking.client().get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["sacrebleu.bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    assert run.data.tags["sacrebleu.chrf_signature"].startswith("nrefs:1|case:mixed")
    assert {a.path for a in tracking.client().list_artifacts(run_id, "translations")} == {
        f"translations/{split}.{kind}" for split in ("valid", "test") for kind in ("greedy.hyp", "beam.hyp", "ref")
    }
    assert {a.path for a in tracking.client().list_artifacts(run_id, "subwords")} == {
        "subwords/src.model",
        "subwords/tgt.model",
    }
    epochs = sorted(tracking.client().get_metric_history(run_id, "valid/bleu_greedy"), key=lambda m: m.step)
    assert len(epochs) == 5 and all(m.step > 0 for m in epochs)  # the curve: validation BLEU (greedy) every epoch
    final = tracking.client().get_metric_history(run_id, "valid_bleu_greedy")  # the chosen checkpoint's, apart
    assert [m.step for m in final] == [0]  # a summary: one value, at step 0, so not a point on the curve
    assert final[0].value == pytest.approx(max(m.value for m in epochs))  # the best checkpoint was the one kept
    assert len(tracking.client().get_metric_history(run_id, "train/grad_norm")) == run.data.metrics["train_steps"]


def test_cli_translate_and_evaluate_reproduce_the_flow_scores(learned, reversal, tmp_path):
    run_id, metrics = learned["dot"]["run_id"], learned["dot"]["metrics"]
    translated = subprocess.run(
        rnnlab_command("translate", run_id, "--input", str(reversal / "test.src")),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert translated.returncode == 0, translated.stderr[-2000:]
    saved = tracking.download_artifact(run_id, "translations/test.beam.hyp", tmp_path).read_text()
    assert translated.stdout == saved

    greedy = subprocess.run(
        rnnlab_command("translate", run_id, "--input", str(reversal / "test.src"), "--beam", "1"),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    saved_greedy = tracking.download_artifact(run_id, "translations/test.greedy.hyp", tmp_path).read_text()
    assert greedy.stdout == saved_greedy

    scored = subprocess.run(
        rnnlab_command(
            "evaluate", run_id, "--src", str(reversal / "test.src"), "--ref", str(reversal / "test.tgt"), "--json"
        ),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert scored.returncode == 0, scored.stderr[-2000:]
    result = json.loads(scored.stdout.splitlines()[-1])["metrics"]
    assert result["file.test.src_bleu"] == pytest.approx(metrics["test_bleu"])
    assert result["file.test.src_chrf_greedy"] == pytest.approx(metrics["test_chrf_greedy"])


def test_language_model_scoring_of_a_translation_run_is_refused_clearly(learned, reversal):
    done = subprocess.run(
        rnnlab_command("evaluate", learned["dot"]["run_id"], "--file", str(reversal / "test.src")),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 2
    assert "is a nmt run: score it with --src and --ref, not --file" in done.stderr
