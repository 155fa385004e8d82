"""Embedding throughput: TensorFlow running a REMEDIS-style SavedModel vs medfound on its conversion.

Run: .venv/bin/python -m bench.remedis_vs_tf [--batch-size 8] [--batches 4]
Writes a full-size BiT R50x1 SavedModel with TensorFlow (random weights, BiT naming, [0, 1] -> [-1, 1]
inside, as REMEDIS documents its input), converts it without TensorFlow, then times both on the same
batches at 224 and 448, fp32 (medfound eager and compiled; bf16 separately). The last line is the
448 fp32 speed-up of medfound's compiled model over TensorFlow.
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tests.convert import tf_bit

from medfound.convert.remedis import convert_remedis

# medfound.convert.tf_comparison imports torchvision, which must come before TensorFlow (imported in main)
from medfound.convert.tf_comparison import relative_error
from medfound.models import load_model
from medfound.tasks.embed import EmbedOptions, _Runner


def timed(fn, batches) -> float:
    """Images per second of fn over the batches, after one warm-up call."""
    fn(batches[0])
    start = time.perf_counter()
    for batch in batches:
        fn(batch)
    return sum(len(b) for b in batches) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=4)
    args = parser.parse_args()
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "cxr-50x1-remedis-m"
        tf_bit.save_object_based(
            src, tf_bit.random_values(tf_bit.bit_variable_specs()), scale_inputs=True
        )
        start = time.perf_counter()
        convert_remedis(src, Path(tmp) / "w.safetensors", network_input="symmetric")
        print(f"converted without TensorFlow in {time.perf_counter() - start:.1f} s")
        loaded = tf.saved_model.load(str(src))
        model = load_model("cxr-50x1-remedis-m", Path(tmp) / "w.safetensors")
        speedups = {}
        for size in (224, 448):
            rng = np.random.default_rng(size)
            nhwc = [
                rng.uniform(0, 1, (args.batch_size, size, size, 3)).astype(np.float32)
                for _ in range(args.batches)
            ]
            nchw = [torch.from_numpy(b).permute(0, 3, 1, 2).contiguous() for b in nhwc]

            def tf_embed(batch):
                return loaded(tf.constant(batch)).numpy().mean(axis=(1, 2))

            tf_rate = timed(tf_embed, nhwc)
            print(f"{size}px TensorFlow {tf.__version__} fp32: {tf_rate:6.2f} img/s")
            for label, options in (
                ("fp32 eager", EmbedOptions(batch_size=args.batch_size)),
                ("fp32 compile", EmbedOptions(batch_size=args.batch_size, compile=True)),
                (
                    "bf16 compile",
                    EmbedOptions(batch_size=args.batch_size, compile=True, precision="bf16"),
                ),
            ):
                runner = _Runner(model, torch.device("cpu"), options)
                rate = timed(runner, nchw)
                error = relative_error(runner(nchw[0]).numpy(), tf_embed(nhwc[0]))
                speedups[(size, label)] = rate / tf_rate
                print(
                    f"{size}px medfound {label:12s}: {rate:6.2f} img/s = {rate / tf_rate:.2f}x "
                    f"TensorFlow (relative difference {error:.1e})",
                    flush=True,
                )
    print(
        f"448 fp32 speed-up of medfound (compile) over TensorFlow: {speedups[(448, 'fp32 compile')]:.2f}x"
    )


if __name__ == "__main__":
    main()
