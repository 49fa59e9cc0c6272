"""Compare one shared Adam state against one Adam state per NMT action.

The three actions of `Seq2SeqMultiTask` (mt, pos, lemma) all update the
shared encoder. With `optimizer_state="shared"` one Adam instance updates
every action, so the encoder's moments average the gradients of all
tasks. With `"per_action"` each action has its own Adam, and each keeps
its own moments of the encoder. This script trains the quick-mode model
(`nmt_experiments` quick settings) on the cached de-en corpus under the
FixedRatio schedule for `--steps` steps per run, with each state and each
seed, and records the validation translation perplexity every
`--interval` steps. Runs with the same seed start from the same weights,
see the same batches and draw the same tasks.

Usage:

    python benchmarks/nmt_optimizer_state.py --steps 600 --seeds 0 1

The JSON record goes to `benchmarks/results/nmt_optimizer_state.json`
unless `--json` names another path.
"""

import argparse
import json
import os
import pathlib
import platform
import shlex
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from autoloss_models import nmt_experiments as ne  # noqa: E402

DEFAULT_JSON = (pathlib.Path(__file__).parent / "results"
                / "nmt_optimizer_state.json")
STATES = ("shared", "per_action")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600,
                        help="steps per run (default 600)")
    parser.add_argument("--interval", type=int, default=100,
                        help="steps between evaluations (default 100)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1],
                        help="seeds; each runs both states (default 0 1)")
    parser.add_argument("--json", default=str(DEFAULT_JSON),
                        help="output JSON path")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.interval < 1:
        parser.error("--steps and --interval must be >= 1.")

    base = ne.settings_for("quick")
    corpus = ne.load_corpus(base, progress=print)
    load_before = os.getloadavg()
    runs = {state: [] for state in STATES}
    for seed in args.seeds:
        for state in STATES:
            keras.utils.set_random_seed(seed)
            settings = ne.settings_for(
                "quick", optimizer_state=state, max_steps=args.steps,
                segment_length=args.interval, budget_seconds=1e9,
            )
            result = ne.run_baseline(ne.FIXED_RATIO, settings, corpus, seed)
            runs[state].append({
                "seed": seed, "curve": result["curve"],
                "final": result["final"],
                "applied_steps": result["applied_steps"],
            })
            print(f"seed {seed} {state}: validation perplexity "
                  f"{result['final']:.2f} after {args.steps} steps "
                  f"({result['seconds']:.0f} s)", flush=True)

    record = {
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "schedule": ne.FIXED_RATIO,
        "fixed_ratio_probabilities": ne.fixed_ratio_probabilities(base,
                                                                  corpus),
        "steps": args.steps,
        "settings": base.to_dict(),
        "machine": (f"{platform.machine()}, {os.cpu_count()} CPU cores, "
                    f"Python {platform.python_version()}"),
        "load_averages": [list(load_before), list(os.getloadavg())],
        "final_mean": {state: float(np.mean([r["final"] for r in values]))
                       for state, values in runs.items()},
        "runs": runs,
    }
    path = pathlib.Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")

    for state, value in record["final_mean"].items():
        print(f"{state}: mean validation perplexity {value:.2f}")
    print(f"Written to {path}")


if __name__ == "__main__":
    main()
