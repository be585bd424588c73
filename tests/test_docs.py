"""The manual: the README stays short and shows the shipped example study as it is; the reference pages are the ones
docs/gen_reference.py writes from the code today; every page is in the site's navigation; and the site builds with
`mkdocs build --strict`, so a broken link or anchor fails."""

import importlib.util
import os
import re
import subprocess
import sys

import yaml
from conftest import REPO

from rnnlab.schemas.config import known_keys
from rnnlab.schemas.study import StudyConfig, load_study

EXAMPLE = REPO / "conf" / "studies" / "example.yaml"


def generator():
    spec = importlib.util.spec_from_file_location("gen_reference", REPO / "docs" / "gen_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_reference_pages_are_the_ones_the_code_writes_today():
    assert generator().stale() == [], "the reference pages are stale: run `python docs/gen_reference.py`"


def test_a_page_that_differs_from_the_code_is_found_stale(tmp_path):
    gen = generator()
    pages = gen.pages()
    for path, text in pages.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text, encoding="utf-8")
    assert gen.stale(tmp_path) == []
    changed = next(iter(pages))
    (tmp_path / changed).write_text(pages[changed].replace("| `", "| `x", 1), encoding="utf-8")
    assert gen.stale(tmp_path) == [changed]


def test_the_reference_names_every_key_command_and_option():
    gen = generator()
    pages = {path.name: text for path, text in gen.pages().items()}
    study_keys = [k for k in gen.rows(StudyConfig)]
    for key in StudyConfig.model_fields:
        assert f"| `{key}` |" in pages["study-file.md"]
    assert len(study_keys) > len(StudyConfig.model_fields)  # the sections' keys too: metric.name, tune.trials, …
    for schema in gen.SCHEMAS.values():
        assert [key for key in known_keys(schema) if f"| `{key}` |" not in pages["run-config.md"]] == []
        assert all(f"`{m}`" in pages["run-config.md"] for m in schema().logged_metrics())
    for name, command in gen.subcommands(gen.build_parser()[0]).items():
        assert f"## `rnnlab {name}`" in pages["cli.md"]
        for action in command._actions:
            for option in action.option_strings:
                assert option in ("-h", "--help") or f"`{option}`" in pages["cli.md"], (name, option)


def readme() -> str:
    return (REPO / "README.md").read_text(encoding="utf-8")


def test_the_readme_is_short():
    assert len(readme().splitlines()) <= 200


def test_the_readmes_study_file_is_the_shipped_example_and_it_loads():
    blocks = re.findall(r"```yaml\n(.*?)```", readme(), flags=re.S)
    assert EXAMPLE.read_text(encoding="utf-8") in blocks
    study = load_study(EXAMPLE)
    assert study.config.exclude, "the example shows the `exclude` syntax"
    assert len(study.variants) == 6 and len(study.cells) == 6 * len(study.config.seeds)  # 8 variants, 2 excluded
    assert not [c for c in study.cells if c.config.model.cell == "rnn_tanh" and c.config.train.lr == 20.0]


def nav_pages(nav) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in nav_pages(value)]
    return [page for item in nav for page in nav_pages(item)]


def test_every_page_is_in_the_navigation_and_every_readme_link_lands():
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))
    docs = REPO / config["docs_dir"]
    pages = sorted(str(p.relative_to(docs)) for p in docs.rglob("*.md"))
    assert sorted(nav_pages(config["nav"])) == pages
    links = re.findall(r"\]\(((?:docs/)[^)#\s]+)", readme())
    assert links and [link for link in links if not (REPO / link).is_file()] == []


def test_the_site_builds_with_no_warning(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "cli" / "index.html").is_file()
    tutorial = (tmp_path / "site" / "tutorial" / "index.html").read_text(encoding="utf-8")
    assert "At 500 steps, does clipping" in tutorial  # the example study file, included whole
