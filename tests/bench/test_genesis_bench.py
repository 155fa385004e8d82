"""The Genesis benchmark runs through at tiny sizes, and its figures parse, so the script cannot rot."""

import re

import numpy as np
import pytest

from bench import genesis

NUMBER = r"([0-9]+(?:\.[0-9]+)?)"


def _figure(lines: list[str], pattern: str) -> float:
    found = [m for line in lines if (m := re.search(pattern, line))]
    assert len(found) == 1, (pattern, lines)
    return float(found[0].group(1))


@pytest.mark.slow
def test_genesis_bench_quick_dry_run(capsys):
    assert genesis.main(["--quick"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    reference = _figure(lines, rf"^reference \(NumPy.*: {NUMBER} cubes/s$")
    ours = _figure(lines, rf"^medfound GenesisCorruption.*: {NUMBER} cubes/s$")
    assert reference > 0 and ours > 0
    ratio = _figure(lines[-1:], rf"^transform speed ratio, medfound / reference .*: {NUMBER}x$")
    assert ratio == pytest.approx(ours / reference, rel=0.06)  # printed to 0.1
    for mode in ("fp32 eager", "fp32 channels_last_3d", "bf16 autocast channels_last_3d"):
        forward = _figure(lines, rf"^UNet3D {mode}: forward .* = {NUMBER} of GEMM;")
        both = _figure(lines, rf"^UNet3D {mode}: .*forward\+backward .* = {NUMBER} of GEMM$")
        assert forward > 0 and both > 0  # figures, not timed assertions


def test_the_reference_corruption_follows_the_original_steps():
    rng, noise = genesis.random.Random(0), np.random.default_rng(0)
    cube = np.random.default_rng(1).random(genesis.CUBE, dtype=np.float32)
    shuffled = genesis.reference_shuffle(cube, rng, noise)
    assert 0.74 < (shuffled != cube).mean() < 0.82  # as documented (~78%), and as medfound
    inverted = [genesis.reference_intensity(np.linspace(0, 1, 11), rng)[0] for _ in range(200)]
    assert 0.4 < np.mean(np.isclose(inverted, 1.0)) < 0.6  # inverted half of the time
    out = genesis.reference_outpaint(cube, rng, noise)
    assert 0.05 < (out == cube).mean() < 0.7  # windows of the original kept, the rest noise
    x, y = genesis.reference_corruption(cube, rng, noise, plan=(False, False, 0))
    assert np.array_equal(x, y)  # nothing but the flips: input and target alike
