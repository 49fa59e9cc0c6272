"""Print the training throughput of scheduled models on a GPU.

It measures the DCGAN at batch 256 with the full GAN settings (28x28x1,
64 base filters, z of size 128, 5x5 kernels). When
`autoloss_models.seq2seq` exists, it also measures the seq2seq model at
its full sizes: vocabularies of 10,000, a 2-layer encoder of 128 units per
direction, 2-layer decoders and taggers, dropout 0.3 and batch 128. For
each it prints the steps per second of the scheduled model and of the
plain per-action Keras steps, measured as in `step_overhead.py` (same
models, schedule and method, one device).

`--jit-compile auto` (the default) leaves XLA to Keras, which turns it on
when a GPU is present. The script exits with a message and status 1 on a
machine without a GPU.

Usage:

    python benchmarks/gpu_throughput.py
    python benchmarks/gpu_throughput.py --steps 200 --rounds 3 \\
        --jit-compile off
"""

import argparse
import json
import pathlib
import platform
import shlex
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import step_overhead  # noqa: E402
import tensorflow as tf  # noqa: E402

PROGRAM = "benchmarks/gpu_throughput.py"
JIT_CHOICES = {"auto": "auto", "on": True, "off": False}
DCGAN_BATCH = 256
DCGAN_FULL = dict(latent_dim=128, kernel_size=5)
SEQ2SEQ_BATCH = 128
SEQ2SEQ_FULL = dict(
    vocabulary_size=10000, encoder_units=128, encoder_layers=2,
    decoder_layers=2, tagger_layers=2, dropout=0.3,
)


def full_tasks():
    """Return (tasks, skipped): the DCGAN and, if it exists, seq2seq."""
    tasks = [step_overhead.dcgan_task(batch_size=DCGAN_BATCH, **DCGAN_FULL)]
    skipped = []
    try:
        tasks.append(step_overhead.seq2seq_task(batch_size=SEQ2SEQ_BATCH,
                                                **SEQ2SEQ_FULL))
    except ImportError as error:
        skipped.append({"model": "seq2seq", "reason": str(error)})
        print(f"Skipped seq2seq: {error}")
    return tasks, skipped


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Print steps per second of scheduled and plain steps "
        "on one GPU."
    )
    parser.add_argument(
        "--steps", type=step_overhead._positive_int, default=200,
        help="training steps timed per model and round (default: 200)",
    )
    parser.add_argument(
        "--rounds", type=step_overhead._positive_int, default=3,
        help="number of timing rounds, whose median is reported "
        "(default: 3)",
    )
    parser.add_argument(
        "--steps-per-execution", type=step_overhead._positive_int,
        default=1,
        help="steps_per_execution of every model (default: 1)",
    )
    parser.add_argument(
        "--jit-compile", choices=sorted(JIT_CHOICES), default="auto",
        help="XLA setting of every model: auto leaves it to Keras "
        "(default: auto)",
    )
    parser.add_argument(
        "--json", type=pathlib.Path, default=None,
        help="optional path of a JSON record of the rows",
    )
    return parser.parse_args(argv)


def main(argv=None):
    """Measure every task on the GPU and print steps per second.

    Returns:
        The list of result rows.

    Raises:
        SystemExit: when TensorFlow finds no GPU.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        raise SystemExit(
            "No GPU found: TensorFlow lists no GPU device on this machine, "
            "so there is no GPU throughput to measure. Run this script on "
            "a machine with a CUDA GPU and a GPU build of TensorFlow, or "
            "use benchmarks/step_overhead.py for CPU step times."
        )
    tasks, skipped = full_tasks()
    rows = []
    for task in tasks:
        print(f"Measuring {task.name} (batch {task.batch_size}, "
              f"{args.steps} steps x {args.rounds} rounds)", flush=True)
        row = step_overhead.measure(
            task, "none", None, args.steps_per_execution, args.steps,
            args.rounds, jit_compile=JIT_CHOICES[args.jit_compile],
        )
        row["plain_steps_per_s"] = 1000.0 / row["plain_ms"]
        row["scheduled_steps_per_s"] = 1000.0 / row["scheduled_ms"]
        rows.append(row)

    print(f"{'model':<8} {'batch':>5} {'xla':>5} {'plain steps/s':>13} "
          f"{'scheduled steps/s':>17} {'ratio':>6}")
    for row in rows:
        print(f"{row['model']:<8} {row['batch_size']:>5} "
              f"{str(row['jit_compile']):>5} "
              f"{row['plain_steps_per_s']:>13.1f} "
              f"{row['scheduled_steps_per_s']:>17.1f} {row['ratio']:>6.3f}")
    if args.json is not None:
        record = {
            "command": shlex.join(["python", PROGRAM] + argv),
            "machine": step_overhead.describe_machine(),
            "gpus": [gpu.name for gpu in gpus],
            "versions": {"python": platform.python_version(),
                         "tensorflow": tf.__version__},
            "rows": rows,
            "skipped": skipped,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")
        print(f"Wrote {args.json}")
    return rows


if __name__ == "__main__":
    main()
