"""The per-class rich table: figures with intervals, undefined ones, macro row, caption."""

from rich.console import Console

from medfound.evaluation.bootstrap import Figure
from medfound.evaluation.tables import class_table, format_figure


def _text(table):
    console = Console(record=True, width=160)
    console.print(table)
    return console.export_text()


def test_classification_table():
    metrics = {
        "per_class": {
            "effusion": {
                "auc": Figure(0.9123, 0.8711, 0.9444, 1000).to_dict(),
                "ap": 0.5,
                "n_pos": 12,
                "n_neg": 30,
            },
            "oedema": {"auc": None, "ap": None, "n_pos": 0, "n_neg": 42},
        },
        "macro_auc": Figure(0.9123, 0.8711, 0.9444, 1000),
        "macro_ap": Figure(0.5, None, None, 0),
        "accuracy": {"value": 0.8, "low": 0.7, "high": 0.9},
    }
    text = _text(class_table(metrics, "logistic probe"))
    lines = text.splitlines()
    assert "logistic probe" in lines[0]
    effusion = next(line for line in lines if "effusion" in line)
    assert "0.912 [0.871, 0.944]" in effusion and "0.500" in effusion and "12" in effusion
    oedema = next(line for line in lines if "oedema" in line)
    assert oedema.count("undefined") == 2
    macro = next(line for line in lines if line.strip("│ ").startswith("macro"))
    assert "0.912 [0.871, 0.944]" in macro and "0.500" in macro
    assert "accuracy 0.800 [0.700, 0.900]" in text


def test_segmentation_table_uses_mean_rows():
    metrics = {
        "per_class": {"tumour": {"dice": 0.8, "iou": 0.66, "hd95": None}},
        "mean_dice": 0.8,
        "mean_iou": 0.66,
        "mean_hd95": None,
    }
    text = _text(class_table(metrics, "segmentation"))
    assert "Dice" in text and "HD95" in text
    macro = next(line for line in text.splitlines() if "macro" in line)
    assert "0.800" in macro and "undefined" in macro


def test_format_figure():
    assert format_figure(None) == "undefined"
    assert format_figure({"value": None, "low": None, "high": None}) == "undefined"
    assert format_figure(0.12345) == "0.123"
    assert format_figure(7) == "7"
