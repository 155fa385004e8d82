"""GPU check: the CUDA/NCCL paths no CPU test can reach, in one short run on a machine with NVIDIA GPUs.

Run: .venv/bin/python -m bench.gpu_check [--out gpu_check_out] [--steps 6] [--device cuda]

What it does (each part prints one line, PASS/FAIL/SKIP with its figures; a JSON report is written):
1. environment: torch, CUDA, GPU names and count;
2. simclr-1gpu: `medfound pretrain simclr` on one GPU, fp32, a few steps (the reference for 3);
3. simclr-nccl: the same run under torchrun on 2 GPUs (NCCL, SyncBatchNorm, per-rank device binding)
   against 2 CPU processes on gloo with the same ranks and seeds: logged losses and final weights
   must agree (relative 1e-3 and 1e-2; TF32 is switched off); needs >= 2 GPUs, else SKIP;
4. embed-torchrun: `medfound embed` under torchrun on 2 GPUs (all_gather_object of the summaries on
   NCCL, rank 0 merges) gives the same rows as one process; needs >= 2 GPUs;
5. bf16: SimCLR steps under CUDA bf16 autocast stay finite; bf16 embeddings agree with fp32 (cosine
   similarity > 0.99);
6. throughput: embed img/s of BiT-R50x1 at 448 (fp32, bf16) and SimCLR training img/s at 224 (bf16,
   batch 128) on one GPU: the figures for the README.
The last line is the verdict: "gpu_check: N passed, M failed, K skipped".

`--device cpu` runs the same script on a CPU machine with gloo (parts 3-4 then use 2 CPU processes,
part 6 is skipped): that is how the script itself is tested (tests/bench/test_gpu_check.py).
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).parents[1]
TINY_MODEL = "timm:resnet18"


def write_images(folder: Path, n: int = 32, size: int = 64) -> Path:
    """`n` random RGB PNGs with some structure (smooth blobs), the same in every run."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size)), -1)
    for i in range(n):
        centre, colour = rng.uniform(0.2, 0.8, 2), rng.uniform(0, 255, 3)
        weight = np.exp(-((grid - centre) ** 2).sum(-1) / 0.05)[..., None]
        noise = rng.uniform(0, 40, (size, size, 3))
        image = np.clip(weight * colour + noise, 0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / f"img{i:03d}.png")
    return folder


def cli(*args: str, nproc: int = 1, timeout: int = 900) -> subprocess.CompletedProcess:
    """`medfound ARGS` in a subprocess, under torchrun when nproc > 1."""
    if nproc > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc)]
        launcher += ["--master_addr", "127.0.0.1", "--master_port", str(_free_port())]
        command = [*launcher, "-m", "medfound.cli.main", *args]
    else:
        command = [sys.executable, "-m", "medfound.cli.main", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Report:
    """Collects one result line per part; prints as it goes."""

    def __init__(self):
        self.parts: dict[str, dict] = {}

    def add(self, name: str, status: str, **figures) -> None:
        self.parts[name] = {"status": status, **figures}
        shown = ", ".join(f"{k}={v}" for k, v in figures.items())
        print(f"[{status}] {name}: {shown}", flush=True)

    def verdict(self) -> str:
        counts = {s: sum(p["status"] == s for p in self.parts.values()) for s in ("PASS", "FAIL")}
        skipped = sum(p["status"] == "SKIP" for p in self.parts.values())
        return f"gpu_check: {counts['PASS']} passed, {counts['FAIL']} failed, {skipped} skipped"


def _pretrain_args(data: Path, run: Path, device: str, steps: int, *extra: str) -> list[str]:
    return [
        "pretrain", "simclr", "--data", str(data), "--out", str(run), "--model", TINY_MODEL,
        "--init", "random", "--batch-size", "16", "--image-size", "64", "--max-steps", str(steps),
        "--warmup-epochs", "0", "--log-every", "1", "--device", device, "--workers", "2",
        "--no-progress", *extra,
    ]  # fmt: skip


def _losses(run: Path) -> list[float]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines]


def _max_relative(a: dict, b: dict) -> float:
    worst = 0.0
    for key, value in a.items():
        if value.is_floating_point():
            scale = value.abs().max().clamp_min(1e-6)
            worst = max(worst, float((value - b[key]).abs().max() / scale))
    return worst


def _final_weights(run: Path) -> dict:
    from medfound.engine.checkpoint import list_checkpoints, load_checkpoint

    return load_checkpoint(list_checkpoints(run)[-1])["model"]


def check_simclr(report: Report, data: Path, out: Path, device: str, gpus: int, steps: int):
    """One device, then 2 ranks on NCCL against the same 2 ranks on CPU/gloo.

    The reference is 2 CPU processes, not 1 GPU: each rank seeds its own augmentation, so only a run
    with the same rank layout draws the same views; that 2 gloo ranks train exactly as one process
    is what the CPU test suite shows (tests/engine/test_trainer.py).
    """
    one = out / "simclr-1"
    done = cli(*_pretrain_args(data, one, device, steps))
    if done.returncode != 0:
        report.add("simclr-1gpu", "FAIL", error=done.stderr[-800:])
        return
    losses = _losses(one)
    finite = all(np.isfinite(losses))
    report.add("simclr-1gpu", "PASS" if finite else "FAIL", steps=len(losses), first=losses[0])
    if gpus < 2:
        report.add("simclr-nccl", "SKIP", reason=f"{gpus} GPU(s); needs 2")
        return
    runs = {}
    for name, where in (("gloo-cpu", "cpu"), ("nccl", device)):
        runs[name] = out / f"simclr-2-{name}"
        done = cli(*_pretrain_args(data, runs[name], where, steps), nproc=2)
        if done.returncode != 0:
            report.add("simclr-nccl", "FAIL", run=name, error=done.stderr[-800:])
            return
    pairs = zip(_losses(runs["gloo-cpu"]), _losses(runs["nccl"]), strict=True)
    gap = max(abs(a - b) / abs(a) for a, b in pairs)
    weights = _max_relative(_final_weights(runs["gloo-cpu"]), _final_weights(runs["nccl"]))
    ok = gap < 1e-3 and weights < 1e-2
    report.add(
        "simclr-nccl",
        "PASS" if ok else "FAIL",
        loss_rel_gap=f"{gap:.2e}",
        weight_rel=f"{weights:.2e}",
    )


def check_embed(report: Report, data: Path, out: Path, device: str, gpus: int):
    import pyarrow.parquet as pq

    common = ["--model", TINY_MODEL, "--random-init", "--image-size", "64", "--device", device]
    one, two = out / "embed-1.parquet", out / "embed-2.parquet"
    done = cli("embed", str(data), "--out", str(one), *common)
    if done.returncode != 0:
        report.add("embed-torchrun", "FAIL", error=done.stderr[-800:])
        return None
    if gpus < 2:
        report.add("embed-torchrun", "SKIP", reason=f"{gpus} GPU(s); needs 2")
        return one
    done = cli("embed", str(data), "--out", str(two), *common, nproc=2)
    if done.returncode != 0:
        report.add("embed-torchrun", "FAIL", error=done.stderr[-800:])
        return one
    a, b = (pq.read_table(p).to_pydict() for p in (one, two))
    if sorted(a["path"]) != sorted(b["path"]):
        report.add("embed-torchrun", "FAIL", rows=len(b["path"]), expected=len(a["path"]))
        return one
    by_path = dict(zip(b["path"], b["embedding"], strict=True))
    gap = max(
        float(np.abs(np.subtract(v, by_path[p])).max() / (np.abs(v).max() + 1e-6))
        for p, v in zip(a["path"], a["embedding"], strict=True)
    )
    ok = sorted(a["path"]) == sorted(b["path"]) and gap < 1e-3
    report.add(
        "embed-torchrun", "PASS" if ok else "FAIL", rows=len(b["path"]), rel_gap=f"{gap:.1e}"
    )
    return one


def check_bf16(report: Report, data: Path, out: Path, device: str, fp32_rows: Path | None):
    import pyarrow.parquet as pq

    run = out / "simclr-bf16"
    done = cli(*_pretrain_args(data, run, device, 3, "--precision", "bf16"))
    finite = done.returncode == 0 and all(np.isfinite(_losses(run)))
    rows = out / "embed-bf16.parquet"
    args = ["--model", TINY_MODEL, "--random-init", "--image-size", "64", "--device", device]
    embedded = cli("embed", str(data), "--out", str(rows), *args, "--precision", "bf16")
    cosine = float("nan")
    if embedded.returncode == 0 and fp32_rows is not None:
        a, b = (pq.read_table(p).to_pydict() for p in (fp32_rows, rows))
        by_path = dict(zip(b["path"], b["embedding"], strict=True))
        if sorted(by_path) == sorted(a["path"]):
            cosine = min(
                float(np.dot(v, by_path[p]) / (np.linalg.norm(v) * np.linalg.norm(by_path[p])))
                for p, v in zip(a["path"], a["embedding"], strict=True)
            )
    ok = finite and cosine > 0.99
    error = (done.stderr or embedded.stderr)[-500:] if not ok else ""
    report.add(
        "bf16", "PASS" if ok else "FAIL", finite=finite, min_cosine=round(cosine, 4), error=error
    )


def check_throughput(report: Report, device: str) -> None:
    """Embedding and training rates of BiT-R50x1 on one GPU (random init, synthetic batches)."""
    if device != "cuda":
        report.add("throughput", "SKIP", reason="GPU figures only")
        return
    from medfound.methods.simclr import SimCLR
    from medfound.methods.simclr_views import preset_views
    from medfound.models import load_model

    figures = {}
    model = load_model("resnetv2_50x1_bit.remedis_cxr_m", random_init=True).cuda().eval()
    model = model.to(memory_format=torch.channels_last)
    batch = torch.rand(64, 3, 448, 448, device="cuda").contiguous(memory_format=torch.channels_last)
    for precision in ("fp32", "bf16"):
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        with torch.inference_mode(), torch.autocast("cuda", dtype, enabled=precision == "bf16"):
            figures[f"embed_448_{precision}_img_s"] = round(_rate(lambda: model(batch), 64), 1)
    encoder = load_model("resnetv2_50x1_bit.bit_m_in21k", random_init=True)
    method = SimCLR(encoder.train(), preset_views("path"))
    method.model.cuda()
    optimizer = torch.optim.SGD(method.model.parameters(), lr=0.01)
    images = torch.rand(128, 3, 256, 256, device="cuda")

    def step():
        with torch.no_grad():
            views = method.prepare(images, 0)
        with torch.autocast("cuda", torch.bfloat16):
            loss = method.loss(method.model, views).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    figures["simclr_224_bf16_img_s"] = round(_rate(step, 128), 1)
    report.add("throughput", "PASS", **figures)


def _rate(fn, items: int, repeats: int = 10) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    torch.cuda.synchronize()
    return items * repeats / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_check_out"))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / time.strftime("run-%Y%m%d-%H%M%S")  # each run in a fresh folder: runs and
    work.mkdir()  # outputs of an earlier check are never resumed or compared
    report = Report()
    gpus = torch.cuda.device_count() if args.device == "cuda" else 2  # gloo: 2 CPU processes
    if args.device == "cuda" and gpus == 0:
        report.add("environment", "FAIL", reason="no CUDA device")
        print(report.verdict())
        return 1
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    report.add(
        "environment", "PASS", torch=torch.__version__, cuda=torch.version.cuda, gpus=gpus,
        names=";".join(names) or "cpu",
    )  # fmt: skip
    os.environ.setdefault("MEDFOUND_UID_SALT", "gpu-check-salt-0123456789")
    os.environ["NVIDIA_TF32_OVERRIDE"] = "0"  # GPU against CPU: full fp32 matmuls and convolutions
    data = write_images(work / "images")
    check_simclr(report, data, work, args.device, gpus, args.steps)
    fp32_rows = check_embed(report, data, work, args.device, gpus)
    check_bf16(report, data, work, args.device, fp32_rows)
    check_throughput(report, args.device)
    for where in (work, args.out):
        (where / "report.json").write_text(json.dumps(report.parts, indent=2))
    print(report.verdict())
    return 0 if all(p["status"] != "FAIL" for p in report.parts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
