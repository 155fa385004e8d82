"""Whole slides on the CPU: how fast tissue tiles get from disk to an embedding batch, and whether
reading them keeps up with the model.

Run: .venv/bin/python -m bench.wsi [--size 20480] [--tiles 384] [--rounds 3] [--workers N]
     [--model resnetv2_50x1_bit.remedis_path_m] [--batch-size 32] [--skip-model] [--quick]

A generated pyramidal TIFF in a temporary folder: --size px square at 0.25 um/px, JPEG tiles of
256 px, 3 levels (x1, x2, x4), stained tissue with texture over most of it. The first --tiles tissue
tiles of 224 px at 0.5 um/px (read from level 1) are timed:
(a) Reading: medfound's SlideTileDataset through the embed DataLoader (--workers processes: read,
    decode, resize, preprocess, collate into batches of --batch-size) against the same regions read
    one by one with tiffslide's read_region in a plain loop (the same tiles, 224 px, no resize
    needed at level 1). Rounds are interleaved and each side keeps its best.
(b) End to end: the loader feeding --model (random init, fp32, eval) against the model alone on a
    batch already in memory, tiles/s each; their ratio says whether reading is the bottleneck
    (target >= 0.9).
The last line is the end-to-end fraction of the model-only rate.
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from medfound.data.tiles import SlideTileDataset, TileOptions, plan_tiles
from medfound.engine.loader import build_loader
from medfound.io import get_preset
from medfound.io.slide import open_slide

MPP = 0.25
TILE = 224


def write_slide(path: Path, size: int) -> Path:
    """A JPEG-tiled pyramid with an elliptical tissue region over ~70% of the slide, textured by
    smooth stripes (so JPEG decodes as real tissue does, not as noise)."""
    import tifffile

    axis = np.arange(size, dtype=np.float32)
    y, x = axis[:, None], axis[None, :]
    tissue = ((x - size / 2) / (0.48 * size)) ** 2 + ((y - size / 2) / (0.45 * size)) ** 2 < 1
    texture = np.sin(x / 7.0) * np.cos(y / 11.0)  # (size, size), in [-1, 1]
    image = np.empty((size, size, 3), np.uint8)
    for channel, (base, depth) in enumerate(((180, 30), (90, 25), (160, 20))):
        values = base + depth * texture
        image[..., channel] = np.where(tissue, values, 242).astype(np.uint8)
    del texture, tissue
    options = {"tile": (256, 256), "photometric": "rgb", "compression": "jpeg"}
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for level in range(3):
            f = 2**level
            extra = {"subifds": 2} if level == 0 else {"subfiletype": 1}
            resolution = {"resolution": (1e4 / (MPP * f),) * 2, "resolutionunit": "CENTIMETER"}
            tif.write(image[::f, ::f], **options, **resolution, **extra)
    return path


def plain_loop(path: Path, plan, n: int) -> float:
    """Tiles/s of tiffslide's read_region, one tile after another, as a script would."""
    import tiffslide

    slide = tiffslide.TiffSlide(str(path))
    start = time.perf_counter()
    for x, y in plan.xy[:n]:
        region = slide.read_region(
            (int(x), int(y)), plan.level, (plan.read_size,) * 2, as_array=True
        )
        np.ascontiguousarray(region)
    elapsed = time.perf_counter() - start
    slide.close()
    return n / elapsed


def loader_rate(dataset, batch_size: int, workers: int, model=None) -> float:
    """Tiles/s through the embed DataLoader (and the model, when given)."""
    loader = build_loader(dataset, torch.device("cpu"), workers, batch_size=batch_size)
    start, count = time.perf_counter(), 0
    for batch in loader:
        if model is not None:
            with torch.inference_mode():
                model(batch["tensor"])
        count += batch["tensor"].shape[0]
    return count / (time.perf_counter() - start)


def model_rate(model, batch: torch.Tensor, repeats: int) -> float:
    with torch.inference_mode():
        model(batch)  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            model(batch)
    return repeats * batch.shape[0] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=20480)
    parser.add_argument("--tiles", type=int, default=384)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", default="resnetv2_50x1_bit.remedis_path_m")
    parser.add_argument("--skip-model", action="store_true")
    parser.add_argument("--quick", action="store_true", help="a 4096 px slide, 64 tiles")
    args = parser.parse_args()
    if args.quick:
        args.size, args.tiles = 4096, 64
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        path = write_slide(Path(folder) / "slide.tiff", args.size)
        megabytes = path.stat().st_size / 2**20
        print(
            f"slide: {args.size} px square, {megabytes:.0f} MB, written in "
            f"{time.perf_counter() - started:.0f} s"
        )
        options = TileOptions(mpp=0.5, tile_size=TILE)
        slide = open_slide(path)
        plan = plan_tiles(slide, options)
        slide.close()
        plan.forget_pictures()
        plan.xy, plan.tissue = plan.xy[: args.tiles], plan.tissue[: args.tiles]
        n = len(plan.xy)
        print(f"tiles: {n} of 224 px at 0.5 um/px, read from level {plan.level}")
        preset = get_preset("path", size=TILE)
        dataset = SlideTileDataset(
            [plan], preset, options, spatial_dims=2, channels=3, native_size=TILE
        )

        best_loader = best_loop = 0.0
        for round_ in range(args.rounds):
            best_loop = max(best_loop, plain_loop(path, plan, n))
            best_loader = max(best_loader, loader_rate(dataset, args.batch_size, args.workers))
            print(
                f"round {round_ + 1}: loader {best_loader:.0f} tiles/s, plain loop {best_loop:.0f}"
            )
        print(
            f"reading: medfound loader {best_loader:.0f} tiles/s (decode, resize, preprocess, "
            f"batches) vs tiffslide one by one {best_loop:.0f} tiles/s (decode only): "
            f"{best_loader / best_loop:.2f}x"
        )
        if args.skip_model:
            return
        from medfound.models import load_model

        model = load_model(args.model, random_init=True).eval()
        batch = torch.stack([dataset[i]["tensor"] for i in range(args.batch_size)])
        best_model = best_e2e = 0.0
        for round_ in range(args.rounds):
            best_model = max(best_model, model_rate(model, batch, max(1, n // args.batch_size)))
            best_e2e = max(best_e2e, loader_rate(dataset, args.batch_size, args.workers, model))
            print(
                f"round {round_ + 1}: model alone {best_model:.1f} tiles/s, "
                f"end to end {best_e2e:.1f} tiles/s"
            )
        print(
            f"end to end {best_e2e:.1f} tiles/s / model alone {best_model:.1f} tiles/s = "
            f"{best_e2e / best_model:.2f} (target >= 0.9)"
        )


if __name__ == "__main__":
    main()
