"""The MLflow UI and a study's report as a person sees them, in a real browser: Debian's headless Chromium
(/usr/bin/chromium) driven by Playwright from PyPI (no browser download). One tiny real study (`ui_study`, conftest),
`rnnlab ui` over it on a free loopback port, one browser for the module. Each view is saved as a PNG in
$RNNLAB_TEST_ARTIFACTS (else test-artifacts/ in the repository), which CI keeps.

The MLflow UI gives few of its controls accessible names: steps find them by role and visible text where it has
them, and say what else they rely on where it has not. Waits are on what the step needs to see, never on time."""

import base64
import io
import math
import os
import re
from pathlib import Path

import pytest
from conftest import REPO, processes_left
from mlflow import MlflowClient
from test_ui import UI

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(os.environ.get("RNNLAB_TEST_ARTIFACTS") or REPO / "test-artifacts")
TIMEOUT_MS = 30_000  # for any one thing to appear: the UI answers in well under a second once loaded


def missing(reason: str) -> None:
    """Without a browser the tests cannot run: CI must run them (fail), elsewhere they are skipped, saying why."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI runs the browser tests (.ci/run installs Debian's chromium)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium() -> Path:
    # Session-scoped, and asked for before the study: a machine without a browser skips in a second.
    if not CHROMIUM.is_file():
        missing(f"no {CHROMIUM}: install Debian's chromium (apt-get install chromium) to run the browser tests")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing("playwright is not installed: pip install -e '.[dev]'")
    return CHROMIUM


@pytest.fixture(scope="module")
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def ui(chromium, ui_study):
    """`rnnlab ui tiny_ui`, and the address of the study's runs that it printed (what a person opens)."""
    started = UI(ui_study["home"], ui_study["study"])
    started.wait_listening()  # reads its first line, the server's address
    started.study_url = started.lines(1)[0].rpartition(": ")[2]  # the second: the study's runs
    yield started
    started.stop()
    assert not processes_left(grace=10, mark=started.mark)


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    opened = context.new_page()
    yield opened
    context.close()


def screenshot(page, name: str, **options) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"browser-{name}.png"
    page.screenshot(path=str(path), **options)
    return path


def store(ui_study) -> MlflowClient:
    return MlflowClient(f"sqlite:///{ui_study['home'] / 'mlruns' / 'mlflow.db'}")


def open_study(page, ui) -> None:
    """Open the address `rnnlab ui` printed for the study, and close the assistant panel that MLflow opens beside
    every page (it takes a third of the width)."""
    page.goto(ui.study_url)
    page.get_by_role("link", name="study tiny_ui").wait_for()  # the runs table has loaded
    assistant = (
        page.locator("div")
        .filter(has=page.get_by_text("MLflow Assistant"))
        .filter(has=page.get_by_role("button", name="Close"))
        .last
    )  # the innermost block with its title and its Close
    if assistant.count():
        assistant.get_by_role("button", name="Close").click()


# What of a link's text is drawn: the characters inside every box that clips it (the grid cell, the ellipsis
# containers), less the room the ellipsis takes where the text is cut.
VISIBLE_TEXT = """link => {
    let right = Infinity;
    for (let e = link; e && e !== document.body; e = e.parentElement) {
        if (getComputedStyle(e).overflowX !== 'visible') right = Math.min(right, e.getBoundingClientRect().right);
        if (e.getAttribute('role') === 'gridcell') break;
    }
    const range = document.createRange();
    const glyphs = [];
    const walker = document.createTreeWalker(link, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        for (let i = 0; i < node.length; i++) {
            range.setStart(node, i);
            range.setEnd(node, i + 1);
            glyphs.push([node.data[i], range.getBoundingClientRect().right]);
        }
    }
    const cut = glyphs.some(([, r]) => r > right + 0.5);
    const context = document.createElement('canvas').getContext('2d');
    context.font = getComputedStyle(link).font;
    const limit = right + 0.5 - (cut ? context.measureText('\u2026').width : 0);
    return glyphs.filter(([, r]) => r <= limit).map(([c]) => c).join('') + (cut ? '\u2026' : '');
}"""


def test_the_studys_address_opens_its_training_runs_with_the_parent_and_its_readable_children(page, ui, ui_study):
    runs = store(ui_study).search_runs([ui_study["experiment_id"]])
    children = sorted(
        r.info.run_name for r in runs if r.data.tags.get("mlflow.parentRunId") == ui_study["parent_run_id"]
    )
    assert len(children) == 4
    open_study(page, ui)
    # The training runs view (MLflow's "Model training" mode), not its GenAI overview of traces and evaluations.
    page.get_by_role("heading", name="Runs", exact=True).wait_for()
    assert page.get_by_role("heading", name="Overview").count() == 0  # GenAI's landing view
    assert page.get_by_role("link", name="Judges").count() == 0  # in GenAI's sidebar only
    # The parent is the one row; the user expands it with the button in its name's cell (an icon, without a name).
    parent = page.get_by_role("link", name="study tiny_ui", exact=True)
    page.get_by_role("gridcell").filter(has=parent).get_by_role("button").click()
    links = {name: page.get_by_role("link", name=name, exact=True) for name in children}
    for link in links.values():
        link.wait_for()
    screenshot(page, "runs-table")
    # Readable: each child's short variant-first name (`lstm lr=1e38 s2`) is drawn whole, so no two look alike
    # (long names `cell=rnn_tanh,lr=1.0,seed=1` were cut to "cell=rnn_tanh,lr=1.0,see…": two seeds read the same).
    visible = {name: link.evaluate(VISIBLE_TEXT) for name, link in links.items()}
    assert visible == {name: name for name in children}, visible
    assert all(re.fullmatch(r"(rnn_tanh lr=1\.0|lstm lr=1e38) s[12]", name) for name in children), children


def tick_value(label: str) -> float:
    """A chart's tick label as a number: Plotly writes 1.5k, 2M, 1e+308, −5 (a Unicode minus)."""
    text = label.strip().replace("\u2212", "-").replace(",", "")
    scale = {
        "k": 1e3,
        "M": 1e6,
        "G": 1e9,
        "T": 1e12,
        "P": 1e15,
        "E": 1e18,
        "m": 1e-3,
        "µ": 1e-6,
        "μ": 1e-6,
        "n": 1e-9,
        "p": 1e-12,
    }
    if text and text[-1] in scale:
        return float(text[:-1]) * scale[text[-1]]
    try:
        return float(text)
    except ValueError:
        return math.nan  # "∞", "NaN", anything that is no number


def test_tick_labels_are_read_as_numbers():
    assert [tick_value(t) for t in ("0", "150", "1.5k", "2M", "1e+308", "\u22125", "0.005")] == [
        0,
        150,
        1500,
        2e6,
        1e308,
        -5,
        0.005,
    ]
    assert math.isnan(tick_value("NaN")) and math.isnan(tick_value("\u221e"))


def test_a_chart_of_the_deciding_metric_grouped_by_variant_has_finite_axes(page, ui, ui_study):
    client = store(ui_study)
    metric = client.get_run(ui_study["parent_run_id"]).data.tags["rnnlab.metric"]
    assert metric == "valid_ppl"
    curve = "valid/ppl"  # the deciding metric during training; `valid_ppl` is its one value at the end
    children = client.search_runs(
        [ui_study["experiment_id"]], f"tags.`mlflow.parentRunId` = '{ui_study['parent_run_id']}'"
    )
    trained = {r.data.tags["rnnlab.variant"] for r in children if r.data.tags["rnnlab.outcome"] == "trained"}
    assert trained == {"rnn_tanh lr=1.0"}
    open_study(page, ui)
    # Chart mode: the second of the three icons above the table (they have no names; their radio inputs have values).
    page.locator("label:has(input[name=runs-view-mode][value=CHART])").click()
    # Group by → the tag that names the variant, found by typing its first letters.
    page.get_by_role("button", name="Group by").click()
    page.get_by_placeholder("Search", exact=True).fill("rnnlab.var")
    page.get_by_role("menuitemcheckbox", name="rnnlab.variant", exact=True).click()
    page.keyboard.press("Escape")
    page.get_by_role("button", name="Group by: rnnlab.variant").wait_for()
    # Only the deciding metric's curve, found as a user does: by typing its name in "Search metric charts".
    page.get_by_role("searchbox", name="Search metric charts").fill(curve)
    title = page.get_by_text(curve, exact=True)
    # The chart's card: the innermost block holding its title and a Plotly figure (last in document order).
    card = page.locator("div").filter(has=title).filter(has=page.locator("svg.main-svg")).last
    for variant in trained:  # one line per group in the legend: the mean over the variant's seeds
        card.get_by_text(f"{variant} ({curve})").wait_for()
    # Plotly's tick labels (its own SVG classes: the chart has no accessible form of its axes)
    ticks = {axis: [tick_value(t) for t in card.locator(f"g.{axis}tick text").all_text_contents()] for axis in "xy"}
    screenshot(page, "chart-grouped")
    assert len(ticks["x"]) >= 2 and len(ticks["y"]) >= 2, ticks
    # A tiny LM that trained: perplexities of a few hundred over 40 steps. The diverged variant's overflowed
    # perplexity is not stored, so it cannot stretch the axis, and no label may be inf or NaN.
    assert all(math.isfinite(v) and abs(v) <= 1e5 for v in ticks["y"]), ticks
    assert all(math.isfinite(v) and 0 <= v <= 40 for v in ticks["x"]), ticks


def metric_table(page) -> dict[str, str]:
    """A run page's metrics as a person reads them: the "Metrics (n)" heading, and name → value as shown in the
    rows of its table."""
    heading = page.get_by_role("heading", name=re.compile(r"^Metrics \(\d+\)$"))
    heading.wait_for()
    count = int(re.search(r"\d+", heading.inner_text()).group())
    if not count:
        return {}
    table = page.get_by_role("table").filter(has=page.get_by_role("columnheader", name="Metric"))
    rows = [row.get_by_role("cell").all_inner_texts() for row in table.get_by_role("row").all()]
    shown = {cells[0].strip(): cells[1].strip() for cells in rows if len(cells) >= 2}
    assert len(shown) == count, (heading.inner_text(), shown)
    return shown


def test_the_run_page_of_a_child_shows_its_metrics_as_recorded(page, ui, ui_study):
    # metric_table, checked where there is something to read: a child that trained
    run = next(r for r in store(ui_study).search_runs([ui_study["experiment_id"]], "tags.`rnnlab.outcome` = 'trained'"))
    page.goto(f"{ui.url}/#/experiments/{ui_study['experiment_id']}/runs/{run.info.run_id}")
    shown = metric_table(page)
    screenshot(page, "child-run", full_page=True)
    assert shown.keys() == run.data.metrics.keys()
    assert float(shown["valid_ppl"]) == pytest.approx(run.data.metrics["valid_ppl"], rel=1e-6)


def test_the_parent_runs_page_shows_its_metrics(page, ui, ui_study):
    parent = store(ui_study).get_run(ui_study["parent_run_id"])
    open_study(page, ui)
    page.get_by_role("link", name="study tiny_ui", exact=True).click()  # the user opens the study's run
    page.get_by_role("heading", name="study tiny_ui").wait_for()
    shown = metric_table(page)
    screenshot(page, "parent-run", full_page=True)
    assert shown.keys() == parent.data.metrics.keys()
    for name, value in parent.data.metrics.items():
        if math.isfinite(value) and abs(value) < 1e308:
            assert float(shown[name]) == pytest.approx(value, rel=1e-6), name
    # The answer on the study's page: per variant, the deciding metric's mean and interval over the seeds that
    # trained, its spread in log space and n; how many seeds diverged. And the verdict in its description.
    metric = parent.data.tags["rnnlab.metric"]
    for name in (f"rnn_tanh lr:1.0/{metric}_mean", f"rnn_tanh lr:1.0/{metric}_log_std", "rnn_tanh lr:1.0/n"):
        assert name in shown, (name, sorted(shown))
    assert float(shown["rnn_tanh lr:1.0/n"]) == 2 and float(shown["lstm lr:1e38/diverged"]) == 2
    assert f"lstm lr:1e38/{metric}_mean" not in shown  # nothing trained: no mean to show
    description = parent.data.tags["mlflow.note.content"]
    assert "**Answer.**" in description
    assert page.get_by_text(description.partition("**Answer.** ")[2].split(".")[0]).first.is_visible()


# A plot has data when it has coloured pixels: matplotlib draws axes, ticks, labels and grids in black and greys,
# and every line, marker, bar or band of data in colour. Chroma (max − min of R, G, B) above 64 of 255 counts.
COLOURED_PIXELS = """async image => {
    await image.decode();
    const canvas = document.createElement('canvas');
    canvas.width = image.naturalWidth;
    canvas.height = image.naturalHeight;
    const context = canvas.getContext('2d');
    context.drawImage(image, 0, 0);
    const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
    let coloured = 0;
    for (let i = 0; i < data.length; i += 4) {
        const [r, g, b, a] = [data[i], data[i + 1], data[i + 2], data[i + 3]];
        if (a > 127 && Math.max(r, g, b) - Math.min(r, g, b) > 64) coloured++;
    }
    return coloured;
}"""
MIN_COLOURED = 200  # pixels: a short line of data is thousands


def coloured_pixels(page, png: bytes) -> int:
    page.set_content(f'<img src="data:image/png;base64,{base64.b64encode(png).decode()}">')
    return page.locator("img").evaluate(COLOURED_PIXELS)


def test_the_data_check_tells_a_plot_with_only_axes_from_one_with_data(page):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def plot(draw: bool) -> bytes:
        figure, axes = plt.subplots(figsize=(7.5, 4))
        axes.set(
            title="valid_ppl during training", xlabel="training step", ylabel="valid_ppl", xlim=(0, 40), ylim=(90, 170)
        )
        axes.grid(alpha=0.3)
        if draw:
            axes.plot([20, 40], [151, 98.5], marker=".", label="cell=rnn_tanh,lr=1.0")
            axes.legend()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100)
        plt.close(figure)
        return buffer.getvalue()

    assert coloured_pixels(page, plot(draw=False)) < MIN_COLOURED  # only axes: no data, the check fails
    assert coloured_pixels(page, plot(draw=True)) >= MIN_COLOURED


def test_the_report_opened_from_disk_offline_shows_every_plot_with_data(browser, ui_study):
    report = ui_study["home"] / "reports" / ui_study["study"] / "report.html"
    context = browser.new_context(viewport={"width": 1200, "height": 900}, offline=True)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    fetched = []
    page.on("request", lambda request: fetched.append(request.url))
    try:
        page.goto(report.as_uri())  # file://, as a person opens it from the folder
        page.wait_for_load_state("load")
        images = page.locator("img")
        assert images.count() == len(list(report.parent.glob("*.png"))) >= 3  # every plot beside the report
        for image in images.all():
            assert image.evaluate("i => i.complete && i.naturalWidth > 0"), image.get_attribute("alt")
            assert image.get_attribute("src").startswith("data:image/png;base64,")
            coloured = image.evaluate(COLOURED_PIXELS)
            assert coloured >= MIN_COLOURED, f"{image.get_attribute('alt')}: {coloured} coloured pixels"
        screenshot(page, "report", full_page=True)
    finally:
        context.close()
    assert all(url.startswith(("file:", "data:")) for url in fetched), fetched  # nothing from the network


def test_the_reports_table_of_contents_takes_the_reader_to_each_section(browser, ui_study):
    from playwright.sync_api import expect

    report = ui_study["home"] / "reports" / ui_study["study"] / "report.html"
    context = browser.new_context(viewport={"width": 1200, "height": 900}, offline=True)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        page.goto(report.as_uri())
        contents = page.get_by_role("navigation", name="Contents")
        expect(contents).to_be_in_viewport()  # under the title, where a reader starts
        names = contents.get_by_role("link").all_inner_texts()
        headings = page.locator("h2[id], h3[id]").all_inner_texts()  # the report's sections and its plots
        assert names == headings and names[:3] == ["Answer", "The grid", "Results"], names
        assert {"Effect of each factor", "Plots", "training loss", "Runs"} <= set(names), names
        for name in ("Plots", "training loss", "Runs"):
            contents.get_by_role("link", name=name, exact=True).click()
            expect(page.get_by_role("heading", name=name, exact=True)).to_be_in_viewport()
        screenshot(page, "report-contents")
    finally:
        context.close()
