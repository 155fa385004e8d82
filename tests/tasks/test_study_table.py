"""The study's text table: main metric per task, mean +- SD per protocol/encoder and fraction."""

import pytest

from medfound.errors import ConfigError
from medfound.tasks.study import SUMMARY_FILE
from medfound.tasks.study_table import summary_table

COLUMNS = "task,encoder,protocol,fraction,metric,n_seeds,mean,sd,ci_low,ci_high"
ROWS = [
    "cls,scratch,knn,0.5,accuracy,3,0.5,0.1,0.4,0.6",
    "cls,scratch,knn,0.5,macro_auc,3,0.61234,0.0456,0.5,0.7",
    "cls,scratch,knn,1.0,macro_auc,3,0.7,0.05,0.6,0.8",
    "cls,ours,knn,1.0,macro_auc,3,,,,",
    "seg,ours,segment,0.25,mean_dice,1,0.8,,0.7,0.9",
]


def test_each_task_is_shown_by_its_main_metric(tmp_path):
    (tmp_path / SUMMARY_FILE).write_text("\n".join([COLUMNS, *ROWS]) + "\n")
    first, second = summary_table(tmp_path).split("\n\n")
    lines = first.splitlines()
    assert lines[0] == "cls: test macro_auc, mean +- SD over 3 seeds"
    assert lines[1].split() == ["protocol", "encoder", "50%", "labels", "100%", "labels"]
    assert lines[2].split() == ["knn", "scratch", "0.612", "+-", "0.046", "0.700", "+-", "0.050"]
    assert lines[3].split() == ["knn", "ours", "n/a"]  # no value at 100%, no row at 50%
    assert lines[3].index("n/a") == lines[1].index("100%")  # in the 100% column
    assert second.splitlines()[0] == "seg: test mean_dice, mean +- SD over 1 seed"
    assert second.splitlines()[2].split() == ["segment", "ours", "0.800"]


def test_a_study_without_summary_is_named(tmp_path):
    with pytest.raises(ConfigError, match="no summary yet"):
        summary_table(tmp_path)
