"""The GPU check script runs through on CPU (gloo, 2 processes), so it is ready for a GPU machine."""

import json

import pytest

from bench import gpu_check


@pytest.mark.slow
def test_gpu_check_dry_run_on_cpu(tmp_path, capsys):
    code = gpu_check.main(["--out", str(tmp_path), "--steps", "3", "--device", "cpu"])
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "report.json").read_text())
    assert code == 0, printed
    assert {k: v["status"] for k, v in report.items()} == {
        "environment": "PASS",
        "simclr-1gpu": "PASS",
        "simclr-nccl": "PASS",
        "embed-torchrun": "PASS",
        "bf16": "PASS",
        "throughput": "SKIP",
    }
    assert printed.strip().splitlines()[-1] == "gpu_check: 5 passed, 0 failed, 1 skipped"
