"""The study report: every table carries the study's figures (checked against the generated
study's own numbers), the plots are inline, nothing is fetched, user text is escaped, the same
files give the same bytes (so `medfound report` reproduces it from the files alone), optional files
may be missing, and bad files are user errors naming the file."""

import base64
import csv
import re
import shutil
from collections import Counter
from html.parser import HTMLParser

import pytest
import typer
from typer.testing import CliRunner

from medfound.cli.report import report_command
from medfound.errors import ConfigError
from medfound.tasks.study_report import render_report
from tests.tasks.study_fixtures import CONFIG, write_study

SMALL = {"lung": (("linear_probe",), ("macro_auc",))}
STUDY_FILES = (
    "study.yaml", "results.csv", "summary.csv", "comparisons.csv", "label_saving.csv",
    "subsets.csv",
)  # fmt: skip


class Page(HTMLParser):
    """Tables (id, caption, rows of cell texts, row classes), images and tags of an HTML page."""

    def __init__(self, html: str):
        super().__init__()
        self.tables, self.images, self.tags = [], [], Counter()
        self._cell = self._caption = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags[tag] += 1
        if tag == "table":
            self.tables.append({"id": attrs.get("id"), "caption": "", "rows": [], "classes": []})
        elif tag == "caption":
            self._caption = []
        elif tag == "tr":
            self.tables[-1]["rows"].append([])
            self.tables[-1]["classes"].append(attrs.get("class") or "")
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(attrs)

    def handle_endtag(self, tag):
        if tag == "caption":
            self.tables[-1]["caption"] = "".join(self._caption).strip()
            self._caption = None
        elif tag in ("td", "th"):
            self.tables[-1]["rows"][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        for sink in (self._cell, self._caption):
            if sink is not None:
                sink.append(data)

    def table(self, caption_start: str) -> dict:
        found = [t for t in self.tables if t["caption"].startswith(caption_start)]
        assert len(found) == 1, (caption_start, [t["caption"] for t in self.tables])
        return found[0]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    study = write_study(tmp_path_factory.mktemp("study"))
    path = render_report(study.folder)
    html = path.read_text(encoding="utf-8")
    return study, path, html, Page(html)


def _percent(fraction: float) -> str:
    return f"{100 * fraction:g}%"


def test_report_path_and_plot_files(rendered):
    study, path, _, _ = rendered
    assert path == study.folder / "report.html"
    plots = sorted(p.name for p in (study.folder / "plots").iterdir())
    stems = [
        "curve_brain_segment_mean_dice", "curve_chest-xray-_knn_macro_auc",
        "curve_chest-xray-_knn_accuracy", "curve_chest-xray-_linear_probe_macro_auc",
        "curve_chest-xray-_linear_probe_accuracy",
        # one heatmap per protocol, of its headline metric, at the smallest fraction
        "heatmap_knn_macro_auc_0.1", "heatmap_linear_probe_macro_auc_0.1",
        "heatmap_segment_mean_dice_0.1",
    ]  # fmt: skip
    assert plots == sorted(f"{s}.{ext}" for s in stems for ext in ("png", "svg"))
    assert not [p for p in study.folder.iterdir() if p.name.endswith(".partial")]


def test_summary_tables_hold_each_cells_mean_sd_and_interval(rendered):
    study, _, _, page = rendered
    names = {"knn": "k-NN", "linear_probe": "Linear probe", "segment": "Segmentation fine-tuning"}
    # data of two tasks, five encoders x fractions tables, comparisons, label saving, every cell
    assert len(page.tables) == 10
    for row in study.summary:
        table = page.table(f"{row['task']}: {names[row['protocol']]}, {row['metric']}")
        header, *body = table["rows"]
        assert header == ["encoder", "10%", "50%", "100%"]
        line = next(r for r in body if r[0] == row["encoder"])
        expected = (
            f"{row['mean']:.3f} ± {row['sd']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}] "
            f"(n={row['n_seeds']})"
        )
        assert line[header.index(_percent(row["fraction"]))] == expected
        assert table["classes"][1 + [r[0] for r in body].index("scratch")] == "reference"


def _span(values) -> str:
    return str(min(values)) if min(values) == max(values) else f"{min(values)}–{max(values)}"


def test_data_counts_per_task_split_and_fraction(rendered):
    study, _, _, page = rendered
    for task in ("brain", "chest<xray>"):
        table = page.table(f"Data: {task} (over 2 seeds")
        assert table["rows"][0] == ["set", "items", "patients"]
        shown = {r[0]: (r[1], r[2]) for r in table["rows"][1:]}
        mine = [r for r in study.subsets if r["task"] == task]
        seeds = sorted({r["seed"] for r in mine})

        def counts(keep, mine=mine, seeds=seeds):
            chosen = [[r for r in mine if r["seed"] == s and keep(r)] for s in seeds]
            return (
                _span([len(c) for c in chosen]),
                _span([len({r["patient"] for r in c}) for c in chosen]),
            )

        for split in ("train", "val", "test"):
            assert shown[f"{split} split"] == counts(lambda r, split=split: r["split"] == split)
        for fraction in (0.1, 0.5, 1.0):
            expected = counts(lambda r, fraction=fraction: r[f"in_{fraction}"] == 1)
            assert shown[f"training subset at {_percent(fraction)}"] == expected
    assert shown["training subset at 10%"] == ("4", "2")  # 2 of the 12 training patients
    assert shown["training subset at 50%"] == ("12–14", "6–7")  # the seeds differ


def test_comparisons_label_saving_and_every_cell(rendered):
    study, _, _, page = rendered
    table = page.table("Paired comparisons")
    header, *body = table["rows"]
    assert len(body) == len(study.comparisons)
    p_values = {
        (r["task"], r["metric"], _percent(r["fraction"]), r["protocol"]): r["p_value"]
        for r in study.comparisons
    }
    protocol_keys = {"k-NN": "knn", "Linear probe": "linear_probe"}
    protocol_keys["Segmentation fine-tuning"] = "segment"
    for line, css in zip(body, table["classes"][1:], strict=True):
        cells = dict(zip(header, line, strict=True))
        p = p_values[cells["task"], cells["metric"], cells["fraction"],
                     protocol_keys[cells["protocol"]]]  # fmt: skip
        assert cells["p"] == ("<0.001" if p < 0.001 else f"{p:.3f}")
        assert (css == "significant") == (p < 0.05)
        assert cells["encoder A"] == "bit:r50x1" and cells["test"] == "paired t"

    header, *body = page.table("Label saving")["rows"]
    assert len(body) == len(study.label_saving)
    for expected, line in zip(
        sorted(study.label_saving, key=lambda r: (r["task"], r["protocol"], r["metric"])),
        body,
        strict=True,
    ):
        cells = dict(zip(header, line, strict=True))
        assert cells["reference at 100%"] == f"{expected['reference_full']:.3f}"
        smallest = expected["smallest_fraction"]
        assert cells["smallest fraction"] == (_percent(smallest) if smallest else "not reached")
        assert cells["saving"] == (_percent(1 - smallest) if smallest else "n/a")

    header, *body = page.table("Every cell")["rows"]
    assert len(body) == len(study.results) == 60
    values = Counter(f"{r['value']:.3f}" for r in study.results)
    assert Counter(line[header.index("value")] for line in body) == values


def test_plots_are_inline_and_nothing_is_fetched(rendered):
    study, _, html, page = rendered
    assert len(page.images) == 8  # five curves, three heatmaps
    svgs = {p.read_bytes() for p in (study.folder / "plots").glob("*.svg")}
    for image in page.images:
        prefix = "data:image/svg+xml;base64,"
        assert image["src"].startswith(prefix)
        assert base64.b64decode(image["src"][len(prefix) :]) in svgs
        assert image["alt"]
    assert not re.findall(r"(?i)\b(?:https?|ftp)://|//[a-z0-9.-]+\.[a-z]{2,}/", html)
    assert page.tags["script"] == page.tags["link"] == page.tags["iframe"] == 0
    assert "default-src 'none'; img-src data:" in html  # the policy forbids any fetch


def test_user_text_is_escaped_and_the_config_shown(rendered):
    study, _, html, _ = rendered
    assert "<script>" not in html and "<xray>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert f"<h1>Label-efficiency study: {study.folder.name}</h1>" in html  # no name: the folder
    pre = re.search(r"<pre>(.*?)</pre>", html, flags=re.S).group(1)
    unescaped = pre.replace("&lt;", "<").replace("&gt;", ">").replace("&#34;", '"')
    assert unescaped.replace("&#39;", "'").replace("&amp;", "&") == CONFIG
    for protocol in ("k-NN", "Linear probe", "Segmentation fine-tuning"):
        assert f"<strong>{protocol}</strong>: " in html


def test_the_files_alone_reproduce_the_report_byte_for_byte(rendered, tmp_path):
    study, path, _, _ = rendered
    copy = tmp_path / "elsewhere" / study.folder.name  # the title is the folder's name
    copy.mkdir(parents=True)
    for name in STUDY_FILES:
        shutil.copy(study.folder / name, copy / name)
    again = render_report(copy)
    assert again.read_bytes() == path.read_bytes()
    for plot in (study.folder / "plots").iterdir():
        assert (copy / "plots" / plot.name).read_bytes() == plot.read_bytes(), plot.name


@pytest.mark.parametrize("state", ["absent", "empty", "header only"])
def test_optional_files_may_be_missing_or_empty(tmp_path, state):
    study = write_study(tmp_path / "s", tasks=SMALL)
    (study.folder / "subsets.csv").unlink()
    (study.folder / "study.yaml").unlink()
    for name in ("comparisons.csv", "label_saving.csv"):
        if state == "absent":
            (study.folder / name).unlink()
        elif state == "empty":
            (study.folder / name).write_text("")
        else:
            header = (study.folder / name).read_text().splitlines()[0]
            (study.folder / name).write_text(header + "\n")
    html = render_report(study.folder).read_text()
    page = Page(html)
    assert [t["id"] for t in page.tables] == ["summary-lung_linear_probe_macro_auc", "results"]
    assert len(page.images) == 2
    assert "comparisons.csv is missing or empty" in html
    assert "label_saving.csv is missing or empty" in html
    assert "No subsets.csv in the study folder" in html
    assert "No study.yaml in the study folder" in html
    assert "Label-efficiency study: s</title>" in html  # the folder's name without a config


def test_heatmaps_at_chosen_fractions(tmp_path):
    study = write_study(tmp_path / "s", tasks=SMALL)
    html = render_report(study.folder, heatmap_fractions=[1.0, 0.5]).read_text()
    names = sorted(p.name for p in (study.folder / "plots").glob("heatmap_*.svg"))
    assert names == [
        "heatmap_linear_probe_macro_auc_0.5.svg",
        "heatmap_linear_probe_macro_auc_1.svg",
    ]
    assert len(Page(html).images) == 3
    with pytest.raises(
        ConfigError, match=r"heatmap fraction\(s\) 0.25 are not among .* 0.1, 0.5, 1"
    ):
        render_report(study.folder, heatmap_fractions=[0.25])


def test_name_reference_and_heatmap_fraction_from_the_config(tmp_path):
    study = write_study(tmp_path / "s", tasks=SMALL)
    config = study.folder / "study.yaml"
    config.write_text(
        config.read_text().replace("reference: scratch", "reference: bit:r50x1")
        + "heatmap_fraction: 0.5\nname: lung study\n"
    )
    page = Page(render_report(study.folder).read_text())
    assert "heatmap_linear_probe_macro_auc_0.5.svg" in {
        p.name for p in (study.folder / "plots").iterdir()
    }
    assert not (study.folder / "plots" / "heatmap_linear_probe_macro_auc_0.1.svg").exists()
    table = page.table("lung: Linear probe, macro_auc")
    assert dict(zip([r[0] for r in table["rows"]], table["classes"], strict=True)) == {
        "encoder": "", "bit:r50x1": "reference", "scratch": "",
    }  # fmt: skip
    assert "<h1>Label-efficiency study: lung study</h1>" in render_report(study.folder).read_text()


def _rewrite(path, change):
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    rows = change(rows)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _drop_column(rows):
    return [{k: v for k, v in r.items() if k != "n_test"} for r in rows]


def _bad_mean(rows):
    rows[2]["mean"] = "high"
    return rows


def _bad_fraction(rows):
    rows[0]["fraction"] = "1.5"
    return rows


@pytest.mark.parametrize(
    ("name", "change", "message"),
    [
        ("results.csv", _drop_column, r"results.csv lacks the column\(s\) n_test"),
        ("summary.csv", _bad_mean, r"summary.csv has bad numbers: line 4 mean='high'"),
        ("summary.csv", _bad_fraction, r"line 2 fraction='1.5' \(not in \(0, 1\]\)"),
        ("summary.csv", None, r"summary.csv is missing: a study folder written by"),
    ],
)
def test_bad_study_files_are_user_errors(tmp_path, name, change, message):
    study = write_study(tmp_path / "s", tasks=SMALL)
    if change is None:
        (study.folder / name).unlink()
    else:
        _rewrite(study.folder / name, change)
    with pytest.raises(ConfigError, match=message):
        render_report(study.folder)
    assert not (study.folder / "report.html").exists()
    with pytest.raises(ConfigError, match="does not exist"):
        render_report(tmp_path / "nowhere")


def test_report_command(tmp_path):
    app = typer.Typer(pretty_exceptions_enable=False)
    app.command("report")(report_command)

    @app.callback()
    def _root() -> None:
        """A group, so that the command is called by name as under `medfound`."""

    study = write_study(tmp_path / "s", tasks=SMALL)
    runner = CliRunner()
    result = runner.invoke(app, ["report", str(study.folder), "--heatmap-fraction", "0.5"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(study.folder / "report.html")
    assert (study.folder / "plots" / "heatmap_linear_probe_macro_auc_0.5.svg").is_file()
    result = runner.invoke(app, ["report", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert "error:" in result.stderr and "does not exist" in result.stderr
