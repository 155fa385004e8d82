"""Models Genesis on the CPU: the corruption's throughput against the original algorithm, and the
UNet3D's against the machine's GEMM rate.

Run: .venv/bin/python -m bench.genesis [--rounds 3] [--batch-size 32] [--batches 3] [--threads N]
     [--unet-batch 2] [--unet-repeats 2] [--skip-unet] [--quick]

(a) Transforms, on 64x64x32 float32 cubes in [0, 1]: medfound's GenesisCorruption with the original's
probabilities, on batches of --batch-size (torch threads as the machine allows, or --threads), against
`reference_corruption`, a per-sample NumPy implementation of the original algorithm written here from
REFERENCE.md section 3: flip (p 0.4, up to 3 passes over x/y), local pixel shuffling (p 0.5, a Python
loop over 10,000 boxes, each box read from the unshuffled cube, permuted, written to the output so
that later boxes win), non-linear intensity (p 0.9, a Bezier curve evaluated at 100,000 points, then
np.interp; inverted with p 0.5) and painting (p 0.9; out-painting with p 0.8, else in-painting).
Like the original it draws each box's size and place with Python's `random` inside the loop.
Both sides corrupt the same cubes and take the same steps per cube (drawn by medfound's sampler
with the original's probabilities); the reference draws everything else itself. Every round draws
the same; rounds are interleaved and each side keeps its best (noise only slows runs down).
(b) UNet3D forward and forward+backward rates on a batch of --unet-batch cubes, as a fraction of
the torch.mm rate measured in the same run: fp32 eager, fp32 channels_last_3d, and bf16 autocast
(channels_last_3d); FLOPs counted by torch's FlopCounterMode on the meta device.
The last line is the transform speed ratio, medfound / reference.
"""

import argparse
import math
import random
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.common import gemm_rate
from medfound.methods.genesis.corrupt import GenesisCorruption

CUBE = (64, 64, 32)
QUICK_CUBE = (16, 16, 8)


def reference_flip(x: np.ndarray, y: np.ndarray, rng: random.Random, p: float = 0.4):
    """Up to 3 passes, a further one while U < p, each flipping x or y (never z, as the original)."""
    for _ in range(3):
        if rng.random() >= p:
            break
        axis = rng.randint(0, 1)
        x, y = np.flip(x, axis), np.flip(y, axis)
    return x, y


def reference_shuffle(x: np.ndarray, rng: random.Random, shuffler, boxes: int = 10_000):
    """10,000 boxes, sides in [1, dim//10]: each reads the unshuffled cube, the later box wins."""
    out = x.copy()
    for _ in range(boxes):
        sides = [rng.randint(1, max(1, d // 10)) for d in x.shape]
        corner = [rng.randint(0, d - s) for d, s in zip(x.shape, sides, strict=True)]
        where = tuple(slice(c, c + s) for c, s in zip(corner, sides, strict=True))
        window = x[where].flatten()
        shuffler.shuffle(window)
        out[where] = window.reshape(sides)
    return out


def bezier_curve(points: np.ndarray, samples: int = 100_000) -> np.ndarray:
    """(2, samples) the Bezier curve through `points` (n, 2), Bernstein form."""
    t = np.linspace(0.0, 1.0, samples)
    degree = len(points) - 1
    weights = [math.comb(degree, i) * t**i * (1 - t) ** (degree - i) for i in range(degree + 1)]
    return points.T @ np.stack(weights)


def reference_intensity(x: np.ndarray, rng: random.Random, invert_p: float = 0.5):
    """Map through a Bezier curve from (0, 0) to (1, 1), sorted as the original; inverted w.p. 0.5."""
    inner = [[rng.random(), rng.random()], [rng.random(), rng.random()]]
    xs, ys = bezier_curve(np.array([[0.0, 0.0], *inner, [1.0, 1.0]]))
    xs, ys = np.sort(xs), np.sort(ys)
    if rng.random() < invert_p:
        ys = ys[::-1]
    return np.interp(x, xs, ys)


def _box(shape, rng: random.Random, low, high) -> tuple[slice, ...]:
    """Sides in [low(d), high(d)], at least 3 voxels from the border where the box fits so."""
    sides = [rng.randint(low(d), high(d)) for d in shape]
    first = [min(3, d - s) for d, s in zip(shape, sides, strict=True)]
    corner = [
        rng.randint(f, max(f, d - s - 3)) for f, d, s in zip(first, shape, sides, strict=True)
    ]
    return tuple(slice(c, c + s) for c, s in zip(corner, sides, strict=True))


def reference_inpaint(x: np.ndarray, rng: random.Random, noise) -> np.ndarray:
    """Up to 5 boxes (each, the first too, while U < 0.95), sides in [dim//6, dim//3], become noise."""
    x = x.copy()
    for _ in range(5):
        if rng.random() >= 0.95:
            break
        where = _box(x.shape, rng, lambda d: d // 6, lambda d: d // 3)
        x[where] = noise.random(x[where].shape)
    return x


def reference_outpaint(x: np.ndarray, rng: random.Random, noise) -> np.ndarray:
    """All noise but up to 5 windows of the cube, sides dim - [3 dim//7, 4 dim//7]."""
    out = noise.random(x.shape)
    for i in range(5):
        if i and rng.random() >= 0.95:
            break
        where = _box(x.shape, rng, lambda d: d - 4 * d // 7, lambda d: d - 3 * d // 7)
        out[where] = x[where]
    return out


def reference_corruption(cube: np.ndarray, rng: random.Random, noise, plan=None):
    """(corrupted input, target) of one cube, as the original's pipeline. `plan` (shuffle,
    intensity, paint mode: 0 none, 1 in, 2 out) fixes which steps happen instead of drawing them."""
    x, y = reference_flip(cube, cube, rng)
    shuffle, remap, paint = plan or (rng.random() < 0.5, rng.random() < 0.9, None)
    if paint is None:
        paint = (2 if rng.random() < 0.8 else 1) if rng.random() < 0.9 else 0
    if shuffle:
        x = reference_shuffle(x, rng, noise)
    if remap:
        x = reference_intensity(x, rng)
    if paint:
        x = (reference_inpaint, reference_outpaint)[paint - 1](x, rng, noise)
    return x, y.copy()


def plans(batch_shape, seeds) -> list[tuple[bool, bool, int]]:
    """Per cube of each batch, the steps medfound's sampler draws for `seeds`: the reference is
    made to take the same ones, so that both sides do the same work."""
    corruption, steps = GenesisCorruption(), []
    for seed in seeds:
        params = corruption.sample(batch_shape, seed)
        drawn = (params.shuffle.applied, params.intensity.applied, params.painting.mode)
        steps += [(bool(s), bool(i), int(m)) for s, i, m in zip(*drawn, strict=True)]
    return steps


def reference_rate(cubes: np.ndarray, steps) -> float:
    """Cubes/s of `reference_corruption` over `cubes` (n, X, Y, Z), cube i taking steps[i]."""
    rng, noise = random.Random(0), np.random.default_rng(0)
    start = time.perf_counter()
    for cube, plan in zip(cubes, steps, strict=True):
        reference_corruption(cube, rng, noise, plan)
    return len(cubes) / (time.perf_counter() - start)


def medfound_rate(batch: torch.Tensor, seeds) -> float:
    """Cubes/s of GenesisCorruption over `batch` (B, 1, X, Y, Z), one call per seed after a warm-up
    call; each call's outputs are dropped before the next, as a training loop frees its batch."""
    corruption = GenesisCorruption()
    corruption(batch, 10**6)  # warm-up: scratch buffers, caches
    start = time.perf_counter()
    for seed in seeds:
        corruption(batch, seed)
    return len(seeds) * len(batch) / (time.perf_counter() - start)


def transform_rates(args, cube: tuple[int, ...]) -> tuple[float, float]:
    """Best cubes/s of the reference and of medfound over interleaved rounds, on the same cubes
    with the same steps (the same draws every round: rounds differ only by the machine's noise)."""
    data = np.random.default_rng(0).random((args.batch_size, *cube), dtype=np.float32)
    batch = torch.from_numpy(data).unsqueeze(1)
    seeds = list(range(args.batches))
    steps = plans(tuple(batch.shape), seeds)
    shuffled = sum(s for s, _, _ in steps) / len(steps)
    print(f"{len(steps)} cubes per round, {shuffled:.0%} of them shuffled (the same on both sides)")
    reference, ours = 0.0, 0.0
    for round_ in range(args.rounds):
        ref = reference_rate(np.concatenate([data] * args.batches), steps)
        mine = medfound_rate(batch, seeds)
        reference, ours = max(reference, ref), max(ours, mine)
        print(f"round {round_ + 1}: reference {ref:.1f} cubes/s, medfound {mine:.1f} cubes/s")
    return reference, ours


def unet_flops(batch: int, cube: tuple[int, ...]) -> tuple[float, float]:
    """FLOPs of one UNet3D forward, and of forward + backward, on (batch, 1, *cube)."""
    from medfound.models.unet3d import UNet3D

    counts = []
    for backward in (False, True):
        with torch.device("meta"):
            model = UNet3D()
            x = torch.empty(batch, 1, *cube)
        counter = FlopCounterMode(display=False)
        with counter:
            y = model(x)
            if backward:
                y.sum().backward()
        counts.append(float(counter.get_total_flops()))
    return counts[0], counts[1]


def unet_seconds(cube, batch: int, layout, dtype, train: bool, repeats: int) -> float:
    """Best seconds of a UNet3D forward (eval, inference mode) or forward + backward (train)."""
    from medfound.models.unet3d import UNet3D

    model = UNet3D().to(memory_format=layout).train(train)
    x = torch.rand(batch, 1, *cube).to(memory_format=layout)

    def step():
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            if train:
                model(x).float().mean().backward()
            else:
                with torch.inference_mode():
                    model(x)

    step()  # warm-up: oneDNN builds its kernels on the first call
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - start)
    return best


def unet_report(args, cube: tuple[int, ...]) -> None:
    """Print the UNet3D rates as fractions of the GEMM rate of their precision."""
    gemm = {torch.float32: gemm_rate(args.gemm_n, seconds=args.gemm_seconds)}
    gemm[torch.bfloat16] = gemm_rate(args.gemm_n, torch.bfloat16, seconds=args.gemm_seconds)
    print(
        f"GEMM (torch.mm {args.gemm_n}): fp32 {gemm[torch.float32] / 1e9:.1f} GFLOP/s, "
        f"bf16 {gemm[torch.bfloat16] / 1e9:.1f} GFLOP/s"
    )
    forward, both = unet_flops(args.unet_batch, cube)
    shape = "x".join(map(str, cube))
    print(
        f"UNet3D, batch {args.unet_batch} x {shape}: {forward / 1e9:.1f} GFLOP forward, "
        f"{both / 1e9:.1f} GFLOP forward+backward"
    )
    modes = [
        ("fp32 eager", torch.contiguous_format, None),
        ("fp32 channels_last_3d", torch.channels_last_3d, None),
        ("bf16 autocast channels_last_3d", torch.channels_last_3d, torch.bfloat16),
    ]
    for name, layout, dtype in modes:
        reference = gemm[dtype or torch.float32]
        parts = []
        for train, flops, label in ((False, forward, "forward"), (True, both, "forward+backward")):
            seconds = unet_seconds(cube, args.unet_batch, layout, dtype, train, args.unet_repeats)
            parts.append(
                f"{label} {args.unet_batch / seconds:.3f} cubes/s = "
                f"{flops / seconds / reference:.2f} of GEMM"
            )
        print(f"UNet3D {name}: " + "; ".join(parts), flush=True)


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds, best kept")
    parser.add_argument("--batch-size", type=int, default=32, help="cubes per medfound call")
    parser.add_argument("--batches", type=int, default=3, help="batches per round (both sides)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--unet-batch", type=int, default=2)
    parser.add_argument(
        "--unet-repeats", type=int, default=2, help="timed runs per mode, best kept"
    )
    parser.add_argument("--skip-unet", action="store_true")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script runs")
    args = parser.parse_args(argv)
    args.gemm_n, args.gemm_seconds = (256, 0.2) if args.quick else (4096, 4.0)
    if args.quick:
        args.rounds, args.batch_size, args.batches = 1, 4, 2
        args.unet_batch, args.unet_repeats = 1, 1
    return args


def main(argv=None) -> int:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cube = QUICK_CUBE if args.quick else CUBE
    shape = "x".join(map(str, cube))
    print(f"threads {torch.get_num_threads()}, torch {torch.__version__}, numpy {np.__version__}")
    reference, ours = transform_rates(args, cube)
    print(f"reference (NumPy, per sample, the original algorithm): {reference:.2f} cubes/s")
    print(f"medfound GenesisCorruption (batch {args.batch_size}): {ours:.2f} cubes/s")
    if not args.skip_unet:
        unet_report(args, cube)
    print(
        f"transform speed ratio, medfound / reference ({shape}, batch {args.batch_size}): "
        f"{ours / reference:.1f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
