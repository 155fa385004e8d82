"""Study plots: the fraction curves draw each encoder's means at the study's fractions on a log
axis with the CI band (read back from the SVG's coordinates), the heatmap annotates every cell;
PNG and SVG each, reproducible byte for byte, written atomically without touching pyplot."""

import csv
import math
import re

import matplotlib
import numpy as np
import pytest
from PIL import Image

from medfound.evaluation.study_plots import (
    format_fraction,
    safe_name,
    save_fraction_curves,
    save_heatmap,
)

BLUE, RED = "#1f77b4", "#d62728"  # the first two encoders' colours (sorted names)


def _rows():
    """Two tasks, two encoders, fractions 1%, 10%, 100%; strings as csv.DictReader gives them.
    The scratch encoder has no interval at 1% (a single seed)."""
    rows = []
    for task, offset in (("lung", 0.0), ("skin cancer", 0.05)):
        for encoder, lift in (("bit", 0.15), ("scratch", 0.0)):
            for fraction in (0.01, 0.1, 1.0):
                mean = 0.6 + offset + 0.25 * fraction**0.5 + lift * (1 - fraction)
                low, high = (mean - 0.03, mean + 0.02)
                no_ci = encoder == "scratch" and fraction == 0.01
                rows.append({
                    "task": task, "encoder": encoder, "protocol": "linear_probe",
                    "fraction": str(fraction), "metric": "macro_auc", "n_seeds": "3",
                    "mean": f"{mean:.6f}", "sd": "0.01",
                    "ci_low": "" if no_ci else f"{low:.6f}",
                    "ci_high": "" if no_ci else f"{high:.6f}",
                })  # fmt: skip
    return rows


def _backend():
    return dict.__getitem__(matplotlib.rcParams, "backend")  # without resolving it


def _comments(svg: str) -> list[str]:
    """matplotlib writes every text it draws as a path, preceded by the text in a comment."""
    return [c.strip() for c in re.findall(r"<!--(.*?)-->", svg, flags=re.S)]


def _ticks(svg: str, axis: str) -> list[tuple[str, float]]:
    """(label, pixel position) of each major tick of axis 'x' or 'y'."""
    found = []
    blocks = re.split(rf'<g id="{axis}tick_\d+">', svg)[1:]
    for block in blocks:
        use = re.search(r'<use xlink:href="#[^"]+" x="([-\d.]+)" y="([-\d.]+)"', block)
        label = re.search(r"<!--(.*?)-->", block)
        found.append((label.group(1).strip(), float(use.group(1 if axis == "x" else 2))))
    return found


def _path_points(d: str) -> np.ndarray:
    return np.array([[float(x), float(y)] for x, y in re.findall(r"([-\d.]+) ([-\d.]+)", d)])


def _line(svg: str, colour: str, dashed: bool = False) -> np.ndarray:
    """The points of the clipped (inside the axes) solid or dashed line drawn in `colour`."""
    for d, style in re.findall(r'<path d="([^"]+)" clip-path="[^"]+" style="([^"]+)"', svg):
        if f"stroke: {colour}" in style and "fill: none" in style:
            assert ("stroke-dasharray" in style) == dashed, style
            return _path_points(d)
    raise AssertionError(f"no line in {colour}")


def _band(svg: str, colour: str) -> np.ndarray:
    """The outline points of the translucent band filled in `colour` (matplotlib writes a
    collection's paths as definitions placed by <use> at an offset)."""
    for block in re.split(r'<g id="FillBetweenPolyCollection_\d+">', svg)[1:]:
        d = re.search(r'<path id="[^"]+" d="([^"]+)"', block).group(1)
        use = re.search(
            r'<use xlink:href="#[^"]+" x="([-\d.]+)" y="([-\d.]+)" style="([^"]+)"', block
        )
        if f"fill: {colour}" in use.group(3):
            offset = np.array([float(use.group(1)), float(use.group(2))])
            return _path_points(d) + offset
    raise AssertionError(f"no band in {colour}")


def _to_data(pixels, ticks, log=False):
    """Pixel positions to data through the straight line of two ticks (log10 for a log axis)."""
    (l0, p0), (l1, p1) = ticks[0], ticks[-1]
    v0, v1 = (float(l0.rstrip("%")), float(l1.rstrip("%")))
    if log:
        v0, v1 = math.log10(v0), math.log10(v1)
    values = v0 + (np.asarray(pixels) - p0) * (v1 - v0) / (p1 - p0)
    return 10**values if log else values


def test_fraction_curves_draw_the_means_on_a_log_axis_with_bands(tmp_path):
    rows = _rows()
    before = _backend()
    paths = save_fraction_curves(rows, tmp_path)
    assert _backend() == before
    assert [p.name for p in paths] == [
        "curve_lung_linear_probe_macro_auc.png",
        "curve_lung_linear_probe_macro_auc.svg",
        "curve_skin-cancer_linear_probe_macro_auc.png",
        "curve_skin-cancer_linear_probe_macro_auc.svg",
    ]
    assert sorted(tmp_path.iterdir()) == sorted(paths)  # no temporary left

    svg = paths[1].read_text()
    texts = _comments(svg)
    assert {"1%", "10%", "100%", "bit", "scratch", "macro_auc", "encoder"} <= set(texts)
    xticks = _ticks(svg, "x")
    assert [label for label, _ in xticks] == ["1%", "10%", "100%"]
    positions = [p for _, p in xticks]
    assert positions[1] - positions[0] == pytest.approx(positions[2] - positions[1], rel=1e-3)
    yticks = _ticks(svg, "y")

    for colour, encoder in ((BLUE, "bit"), (RED, "scratch")):
        mine = [r for r in rows if r["task"] == "lung" and r["encoder"] == encoder]
        points = _line(svg, colour, dashed=encoder == "scratch")  # the reference is dashed
        x = _to_data(points[:, 0], xticks, log=True)
        y = _to_data(points[:, 1], yticks)
        np.testing.assert_allclose(x, [100 * float(r["fraction"]) for r in mine], rtol=1e-3)
        np.testing.assert_allclose(y, [float(r["mean"]) for r in mine], atol=2e-4)
        band = _to_data(_band(svg, colour)[:, 1], yticks)
        with_ci = [r for r in mine if r["ci_low"]]
        assert band.min() == pytest.approx(min(float(r["ci_low"]) for r in with_ci), abs=2e-4)
        assert band.max() == pytest.approx(max(float(r["ci_high"]) for r in with_ci), abs=2e-4)
    # scratch has no interval at 1%: its band starts at 10%
    scratch_band_x = _to_data(_band(svg, RED)[:, 0], xticks, log=True)
    assert scratch_band_x.min() == pytest.approx(10, rel=1e-3)

    with Image.open(paths[0]) as image:
        assert image.format == "PNG"
        rgb = np.asarray(image.convert("RGB")).reshape(-1, 3)
    colours = {tuple(c) for c in np.unique(rgb, axis=0)}
    assert (0x1F, 0x77, 0xB4) in colours and (0xD6, 0x27, 0x28) in colours
    assert len(colours) > 50


def test_figures_are_reproducible(tmp_path):
    rows = [r for r in _rows() if r["task"] == "lung"]
    first = save_fraction_curves(rows, tmp_path / "a")
    first += save_heatmap(rows, tmp_path / "a", 0.1, "linear_probe", "macro_auc")
    second = save_fraction_curves(rows, tmp_path / "b")
    second += save_heatmap(rows, tmp_path / "b", 0.1, "linear_probe", "macro_auc")
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name
    assert b"<dc:date>" not in first[1].read_bytes()


def test_curves_from_a_csv_file_and_a_single_fraction(tmp_path):
    rows = [r for r in _rows() if r["fraction"] == "1.0" and r["task"] == "lung"]
    rows = [r | {"encoder": {"bit": "imagenet"}.get(r["encoder"], r["encoder"])} for r in rows]
    with open(tmp_path / "summary.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with open(tmp_path / "summary.csv", newline="") as fh:
        paths = save_fraction_curves(csv.DictReader(fh), tmp_path / "plots", reference="imagenet")
    svg = paths[1].read_text()
    assert [label for label, _ in _ticks(svg, "x")] == ["100%"]
    _line(svg, BLUE, dashed=True)  # "imagenet" (first by name) is the reference here
    _line(svg, RED, dashed=False)


def test_heatmap_annotates_every_cell(tmp_path):
    rows = [r for r in _rows() if not (r["task"] == "skin cancer" and r["encoder"] == "scratch")]
    paths = save_heatmap(rows, tmp_path, 0.1, "linear_probe", "macro_auc")
    assert [p.name for p in paths] == [
        "heatmap_linear_probe_macro_auc_0.1.png",
        "heatmap_linear_probe_macro_auc_0.1.svg",
    ]
    texts = _comments(paths[1].read_text())
    at_tenth = [r for r in rows if r["fraction"] == "0.1"]
    assert len(at_tenth) == 3
    for r in at_tenth:
        assert f"{float(r['mean']):.3f}" in texts
    assert texts.count("n/a") == 1  # skin cancer x scratch was not run
    assert {"lung", "skin cancer", "bit", "scratch"} <= set(texts)
    with Image.open(paths[0]) as image:
        rgb = np.asarray(image.convert("RGB")).reshape(-1, 3)
    assert len(np.unique(rgb, axis=0)) > 50


def test_heatmap_without_rows_is_an_error(tmp_path):
    with pytest.raises(
        ValueError, match=r"no summary rows for finetune / macro_auc at fraction 0\.5"
    ):
        save_heatmap(_rows(), tmp_path, 0.5, "finetune", "macro_auc")
    assert not list(tmp_path.iterdir())


def test_names_and_percentages():
    assert [format_fraction(f) for f in (0.01, 0.05, 0.125, 1.0, 0.333)] == [
        "1%", "5%", "12.5%", "100%", "33.3%",
    ]  # fmt: skip
    assert safe_name("chest x-ray/CXR<1>") == "chest-x-ray-CXR-1-"
    assert safe_name("macro_auc.v2") == "macro_auc.v2"
