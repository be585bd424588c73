"""A claims file (conf/studies/lecture.yaml) is checked whole before anything trains: every claim's measurement and
criterion by its kind, every study it names (every cell), and the command-line overrides routed to them. Bad input
is one line naming the file, the claim and the key, exit 2."""

from pathlib import Path

import pytest
import yaml
from conftest import REPO

from rnnlab.cli.main import main
from tasks.claims.claims_file import load_claims

LECTURE = REPO / "conf" / "studies" / "lecture.yaml"


def test_the_lecture_names_its_studies_and_routes_overrides_to_one_or_all():
    lecture = load_claims(LECTURE, ["seeds=[1]", "lm_cells:train.max_steps=7"])
    assert list(lecture.studies) == ["lm_cells_tuned", "lm_cells", "lm_clipping", "lm_residual", "nmt_bidirectional"]
    assert lecture.studies["lm_cells_tuned"].config.tune.trials == 5  # claims 1 and 3: each cell at its tuned lr
    assert {c.config.train.max_steps for c in lecture.studies["lm_cells_tuned"].cells} == {1000}  # not lm_cells
    assert [c.id for c in lecture.config.claims] == [
        "context",
        "vanishing",
        "lstm",
        "clipping",
        "depth",
        "bidirectional",
        "perplexity",
    ]
    assert all(s.config.seeds == [1] for s in lecture.studies.values())
    assert {c.config.train.max_steps for c in lecture.studies["lm_cells"].cells} == {7}
    assert {c.config.train.max_steps for c in lecture.studies["lm_residual"].cells} == {1500}
    assert {c.config.model.cell for c in lecture.studies["lm_cells"].cells} == {"rnn_tanh", "gru", "lstm"}


def test_the_lecture_marks_what_holds_by_construction_and_what_was_published_before_its_criteria():
    """Claim 2's spectral checks (an orthogonal matrix scaled to r gives exactly r^k; the non-normal example) and
    claim 6's refused language model (the config's own rule) are never counted as support; the shipped studies'
    answers were in the README (8b7ff1c) before the criteria that judge them."""
    rules = {c.id: c.rule() for c in load_claims(LECTURE).config.claims}
    assert rules["vanishing"].by_construction == ["spectral_check", "non_normal_check"]
    assert rules["bidirectional"].by_construction == ["lm_refusal"]
    published = load_claims(LECTURE).config.published
    assert published == {s: ["8b7ff1c"] for s in ("lm_clipping", "lm_residual", "nmt_bidirectional")}


def edited(tmp_path: Path, change) -> Path:
    tree = yaml.safe_load(LECTURE.read_text())
    change(tree)
    for claim in tree["claims"]:  # the copy sits elsewhere: its study files and configs by absolute path
        claim["studies"] = [str(LECTURE.parent / f) for f in claim["studies"]]
        if "lm_config" in claim["measure"]:
            claim["measure"]["lm_config"] = str(LECTURE.parent / claim["measure"]["lm_config"])
    path = tmp_path / "lecture.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def claim(tree, cid):
    return next(c for c in tree["claims"] if c["id"] == cid)


BAD = {
    "unknown top-level key": (lambda t: t.update(clams=[]), "unknown key 'clams'"),
    "unknown claim key": (lambda t: claim(t, "context").update(qoute="x"), "unknown key 'claims.0.qoute'"),
    "unknown measurement kind": (
        lambda t: claim(t, "context")["measure"].update(kind="telepathy"),
        "claims.0.measure: Input tag 'telepathy' found using 'kind' does not match",
    ),
    "a criterion key of another kind": (
        lambda t: claim(t, "context")["criterion"].update(min_gain=1),
        "criterion for a effective_context measure: unknown key 'min_gain'",
    ),
    "a range upside down": (
        lambda t: claim(t, "perplexity")["criterion"].update(claimed={"low": 40, "high": 30}),
        "claimed: low 40 is above high 30",
    ),
    "a threshold of the wrong type": (
        lambda t: claim(t, "lstm")["criterion"].update(min_far_gain="big"),
        "min_far_gain: Input should be a valid number",
    ),
    "a missing verdict meaning": (
        lambda t: claim(t, "depth")["verdicts"].pop("inconclusive"),
        "claims.4.verdicts.inconclusive: Field required",
    ),
    "a study the claims do not run": (
        lambda t: claim(t, "depth")["measure"].update(study="lm_depth"),
        "claim 'depth': measure.study 'lm_depth' is not one of the studies",
    ),
    "a study file that is not there": (
        lambda t: claim(t, "depth").update(studies=["nowhere.yaml"]),
        "study file not found:",
    ),
    "a claim id twice": (lambda t: claim(t, "lstm").update(id="context"), "claim ids repeat: context"),
    "a part by construction the kind does not have": (
        lambda t: claim(t, "bidirectional")["criterion"].update(by_construction=["translation"]),
        "by_construction.0: Input should be 'lm_refusal'",
    ),
    "results published for a study the claims do not run": (
        lambda t: t.update(published={"lm_cellz": ["8b7ff1c"]}),
        "published: lm_cellz is not one of the studies",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_claims_file_fails_in_one_line_naming_the_key(case, tmp_path, capsys):
    change, expected = BAD[case]
    if case == "a study file that is not there":
        tree = yaml.safe_load(LECTURE.read_text())
        change(tree)
        path = tmp_path / "lecture.yaml"
        path.write_text(yaml.safe_dump(tree))
    else:
        path = edited(tmp_path, change)
    assert main(["study", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"rnnlab: error: {path}") and expected in err, err


def test_an_override_for_a_study_the_claims_do_not_run_is_refused(capsys):
    assert main(["study", str(LECTURE), "lm_cellz:seeds=[1]"]) == 2
    err = capsys.readouterr().err.strip()
    assert "override 'lm_cellz:seeds=[1]' names study 'lm_cellz'" in err and len(err.splitlines()) == 1


def test_a_bad_override_of_one_study_names_that_study_file(capsys):
    assert main(["study", str(LECTURE), "lm_residual:model.layers=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "lm_residual.yaml" in err and "model.layers is a factor" in err
