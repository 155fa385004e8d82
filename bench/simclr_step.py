"""SimCLR pretraining throughput: `medfound pretrain simclr` against a reference built from lightly.

Run: .venv/bin/python -m bench.simclr_step [--steps 5] [--warmup 2] [--batch-size 32] [--size 224]
     [--rounds 1]

Both sides train BiT-R50x1 (timm's resnetv2_50x1_bit, random init) with a 3-layer SimCLR projection
head, NT-Xent at temperature 0.1 and LARS, on the same folder of generated 256-px PNGs read from disk
with one decoding worker (half of a 2-core machine), two views per image:
- reference: lightly's LightlyDataset + SimCLRTransform (torchvision, per sample on PIL images in the
  worker), SimCLRProjectionHead(num_layers=3), NTXentLoss, lightly's LARS, fp32, as a lightly user
  writes it;
- medfound: the real `pretrain_simclr` (decode and each view's crop, cut from the image as decoded
  and resized once, in the worker; the rest of the views batched on the training device;
  channels-last; our LARS; checkpoint at the end), timed from its own per-step metrics.
Images/s count source images (each gives two views), measured after `--warmup` steps; with
`--rounds N` every configuration runs N times, interleaved, and keeps its best (the machine drifts).
Also printed: both losses on the same embeddings (medfound's is twice lightly's by definition) and
augmentation-only throughput. medfound runs four ways: fp32 and bf16 autocast, eager and --compile
(compilation happens in the warm-up steps, which are not timed). The last line is the end-to-end
ratio of the setting recommended for long CPU runs (bf16 --compile) to the reference.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from medfound.data.crops import CropSpec, view_pair
from medfound.methods.nt_xent import nt_xent
from medfound.methods.simclr_views import SimCLRViews, preset_views
from medfound.tasks.pretrain import pretrain_simclr

ARCH = "resnetv2_50x1_bit"


def write_images(folder: Path, n: int, size: int = 256) -> None:
    """`n` smooth random RGB PNGs (they compress and decode like photographs, not like noise)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        small = rng.integers(0, 256, (size // 8, size // 8, 3)).astype(np.uint8)
        Image.fromarray(small).resize((size, size), Image.BICUBIC).save(folder / f"{i:04d}.png")


def reference_rate(folder: Path, steps: int, warmup: int, batch: int, size: int) -> float:
    """Images/s of a lightly SimCLR loop over `folder` (after `warmup` steps)."""
    import timm
    from lightly.data import LightlyDataset
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead
    from lightly.transforms import SimCLRTransform
    from lightly.utils.lars import LARS

    torch.manual_seed(0)
    transform = SimCLRTransform(input_size=size, normalize={"mean": [0.5] * 3, "std": [0.5] * 3})
    dataset = LightlyDataset(str(folder), transform=transform)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch, shuffle=True, drop_last=True, num_workers=1
    )
    model = nn.Sequential(
        timm.create_model(ARCH, num_classes=0), SimCLRProjectionHead(2048, 2048, 128, 3)
    )
    criterion = NTXentLoss(temperature=0.1)
    optimizer = LARS(model.parameters(), lr=0.3 * batch / 256, momentum=0.9, weight_decay=1e-6)
    model.train()
    times = []
    start = time.perf_counter()
    for (view1, view2), _, _ in loader:
        z = model(torch.cat([view1, view2]))
        loss = criterion(z[:batch], z[batch:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        now = time.perf_counter()
        times.append(now - start)
        start = now
        if len(times) == warmup + steps:
            break
    return batch * steps / sum(times[warmup:])


def medfound_rate(
    folder: Path, steps: int, warmup: int, batch: int, size: int, precision: str, compile: bool
) -> float:
    """Images/s of `pretrain_simclr` over `folder`, from its per-step metrics after `warmup`."""
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        overrides = {
            "data": [str(folder)],
            "model": "bit-m-r50x1",
            "batch_size": batch,
            "image_size": size,
            "init": "random",
            "head_layers": 3,  # as the lightly side's SimCLRProjectionHead(num_layers=3)
            "max_steps": warmup + steps,
            "warmup_epochs": 0.0,
            "precision": precision,
            "compile": compile,
            "device": "cpu",
            "workers": 1,
            "log_every": 1,
            "checkpoint_every": 10**6,
            "progress": False,
            "tensorboard": False,
        }
        pretrain_simclr(run, overrides=overrides)
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    seconds = sum(batch / row["images_per_s"] for row in rows[warmup:])
    return batch * steps / seconds


def same_loss_check() -> tuple[float, float]:
    """medfound's NT-Xent and twice lightly's NTXentLoss on the same random embeddings."""
    from lightly.loss import NTXentLoss

    z = torch.randn(64, 128, dtype=torch.float64)
    ours = nt_xent(z, temperature=0.1).loss.item()
    theirs = NTXentLoss(temperature=0.1)(z[:32], z[32:]).item()
    return ours, 2 * theirs


def augmentation_rates(
    folder: Path, batch: int, size: int, repeats: int = 3
) -> tuple[float, float]:
    """Images/s (two views each) of lightly's per-sample PIL transform and of medfound's views as
    pretraining makes them: each image's two crops cut from it as decoded and resized once (one
    after another, as a worker does), then the rest of the views batched."""
    from lightly.transforms import SimCLRTransform

    images = [Image.open(p).convert("RGB") for p in sorted(folder.glob("*.png"))[:batch]]
    transform = SimCLRTransform(input_size=size, normalize={"mean": [0.5] * 3, "std": [0.5] * 3})
    best_ref = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for image in images:
            transform(image)
        best_ref = max(best_ref, batch / (time.perf_counter() - start))
    decoded = [torch.from_numpy(np.array(i)).permute(2, 0, 1).float().div(255) for i in images]
    crops = CropSpec(size)
    views = SimCLRViews(preset_views("path", image_size=size, crop_in_worker=True))
    best_ours = 0.0
    for seed in range(repeats + 1):  # the first call builds kernels
        start = time.perf_counter()
        rng = np.random.default_rng(seed)
        pairs = torch.cat([view_pair(image, image, rng, crops) for image in decoded])
        views(pairs, seed=seed)
        if seed:
            best_ours = max(best_ours, batch / (time.perf_counter() - start))
    return best_ref, best_ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument(
        "--rounds", type=int, default=1, help="repeat every configuration, keep each one's best"
    )
    args = parser.parse_args()
    ours, theirs = same_loss_check()
    print(f"same embeddings: medfound NT-Xent {ours:.6f}, 2 x lightly NTXentLoss {theirs:.6f}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        write_images(folder, (args.steps + args.warmup) * args.batch_size)
        ref_aug, our_aug = augmentation_rates(folder, args.batch_size, args.size)
        print(
            f"augmentation only ({args.size} px, 2 views): lightly/torchvision PIL {ref_aug:.1f} "
            f"img/s, medfound batched {our_aug:.1f} img/s ({our_aug / ref_aug:.2f}x)"
        )
        shape = (args.steps, args.warmup, args.batch_size, args.size)
        configs = [("fp32", False), ("bf16", False), ("fp32", True), ("bf16", True)]
        reference, rates = 0.0, dict.fromkeys(configs, 0.0)
        for round_ in range(args.rounds):  # interleaved, so that drift hits every configuration
            reference = max(reference, reference_rate(folder, *shape))
            print(f"round {round_ + 1}: reference (lightly, fp32) {reference:.2f} img/s (best)")
            for precision, compile in configs:
                rate = medfound_rate(folder, *shape, precision=precision, compile=compile)
                rates[precision, compile] = max(rates[precision, compile], rate)
                label = f"medfound {precision}" + (" --compile" if compile else "")
                print(f"round {round_ + 1}: {label} {rate:.2f} img/s")
        for (precision, compile), rate in rates.items():
            label = f"medfound {precision}" + (" --compile" if compile else "")
            print(f"{label}: {rate:.2f} img/s ({rate / reference:.2f}x)")
    best = rates["bf16", True]
    print(
        f"medfound bf16 --compile / reference (R50x1, {args.size} px, batch {args.batch_size}): "
        f"{best / reference:.2f}x"
    )


if __name__ == "__main__":
    main()
