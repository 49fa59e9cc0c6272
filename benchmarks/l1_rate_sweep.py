"""Constant L1 rates against DGS on the regression comparison trials.

With one Adam state shared by the task and L1 actions, applying L1 on a
fraction q of the steps acts like a loss weight that grows with q. This
script trains `RandomSchedule` members at several fixed rates q next to the
50-point DGS grid, on the same fresh data sets as `autoloss compare
regression` (same trial seeds), and prints the mean test excess MSE of each.
It shows what a controller that learned only a constant rate could reach.

Usage:
    python benchmarks/l1_rate_sweep.py --trials 10 --json FILE
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import autoloss_tf as al  # noqa: E402
from autoloss_models import l1_experiments  # noqa: E402
from autoloss_tf import commands  # noqa: E402

RATES = (0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.9)


def run_trial(spec, trial, seed):
    """Return {rate or "DGS": test excess MSE} for one fresh data set."""
    split = spec.splits(l1_experiments.trial_seed(seed, trial), trial=True)
    dgs = list(spec.dgs_weights())
    parts = [
        (al.RandomSchedule([1.0 - rate, rate], seed=trial), 1) for rate in RATES
    ]
    parts.append((al.FixedSchedule("task"), len(dgs)))
    model = spec.make_model(
        len(RATES) + len(dgs), split.task_train.x.shape[1],
        task_l1_weights=[0.0] * len(RATES) + dgs, seed=trial,
    )
    l1_experiments.run_population(
        spec, model, al.MemberwiseSchedule(parts), split.task_train,
        split.task_val,
    )
    test = spec.test_metric(model, split)
    val = model.training_state.best_metric.numpy()
    chosen = len(RATES) + int(np.argmin(val[len(RATES):]))
    result = {str(rate): float(test[i]) for i, rate in enumerate(RATES)}
    result["DGS"] = float(test[chosen])
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    spec = l1_experiments.REGRESSION
    trials = [run_trial(spec, t, args.seed) for t in range(args.trials)]
    summary = {}
    for key in trials[0]:
        values = [trial[key] for trial in trials]
        summary[key] = {"mean": float(np.mean(values)),
                        "std": float(np.std(values)), "values": values}
        print(f"{key:>6}: {summary[key]['mean']:.4f} "
              f"(std {summary[key]['std']:.4f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({
                "command": "python " + " ".join(sys.argv),
                "machine": commands.machine_description(),
                "seed": args.seed, "trials": args.trials, "rates": summary,
            }, f, indent=2)


if __name__ == "__main__":
    main()
