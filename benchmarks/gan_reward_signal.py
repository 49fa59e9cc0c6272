"""Measure how much information a GAN segment reward carries about the ratio.

The online GAN controller samples one action per update and gets one
reward per segment of T updates. This script compares the size of the
effect it must learn with the noise in its rewards:

1. Signal in controller training. From a training history
   (`history.json` of `autoloss train-controller gan`), it fits each
   segment's IS gain, P(t+T) - P(t), by least squares on the segment's
   generator share, with one intercept per run and a quadratic in the
   segment's progress through its run. It prints the share's coefficient,
   its standard error and the residual standard deviation.
2. Effect implied by the fixed ratios. From a comparison
   (`autoloss compare gan --json`), the difference in final IS between two
   fixed ratios, divided by their difference in generator share and by
   the number of segments in a run, is the gain per segment that one unit
   of generator share buys over a run.
3. Measurement noise. It trains one quick-mode GAN under a fixed ratio and
   then scores `--repeats` fresh sets of `eval_samples` generated images
   with the same weights, so the spread of those scores is the IS
   measurement noise alone, without training between readings.

From 1 and 2 it estimates how many segments a regression needs before
the implied effect is two standard errors away from zero:
n = (2 * residual std / (effect * std of the share))^2.

Usage:

    python benchmarks/gan_reward_signal.py --history FILE --comparison FILE
        [--low 1:1] [--high 1:5] [--updates 1500] [--repeats 10]
        [--seed 0] [--json PATH]
"""

import argparse
import json
import sys
import time

import numpy as np


def segment_rows(history):
    """Return [run, end update, generator share, IS gain] per segment.

    The first segment of each run has no earlier IS in the history, so it
    gives no row.
    """
    rows = []
    previous = {}
    for entry in history:
        run = entry["run"]
        score = entry["inception_score"]
        if run in previous:
            rows.append([run, entry["step"], entry["generator_fraction"],
                         score - previous[run]])
        previous[run] = score
    return np.asarray(rows, "float64")


def share_coefficient(rows, updates_per_run):
    """Fit IS gain on generator share with run intercepts and progress.

    Returns:
        dict with the share's `coefficient`, its `standard_error`, the
        `residual_std`, the share's `share_std` and the `segments` used.
    """
    runs, steps, share, gain = rows.T
    progress = steps / updates_per_run
    columns = [share, progress, progress ** 2]
    columns += [(runs == run).astype("float64") for run in np.unique(runs)]
    design = np.column_stack(columns)
    coefficients = np.linalg.lstsq(design, gain, rcond=None)[0]
    residuals = gain - design @ coefficients
    dof = len(gain) - design.shape[1]
    variance = residuals @ residuals / dof
    covariance = variance * np.linalg.inv(design.T @ design)
    return {
        "coefficient": float(coefficients[0]),
        "standard_error": float(np.sqrt(covariance[0, 0])),
        "residual_std": float(np.sqrt(variance)),
        "share_std": float(share.std()),
        "segments": int(len(gain)),
    }


def implied_effect(comparison, low, high):
    """Return the gain per segment per unit of generator share.

    The generator share of a ratio "D:G" is G / (D + G).
    """
    from autoloss_models import dcgan
    from autoloss_models import gan_experiments

    methods = comparison["methods"]
    for name in (low, high):
        if name not in methods:
            raise SystemExit(
                f"Method {name!r} is missing from the comparison, which "
                f"contains {sorted(methods)}. Pass --low and --high from "
                "those."
            )
    settings = comparison["settings"]
    segments = settings["total_updates"] // settings["segment_length"]

    def share(name):
        pattern = gan_experiments.fixed_ratio_pattern(name)
        return float(np.mean([a == dcgan.GENERATOR for a in pattern]))

    final_gap = methods[high]["mean"] - methods[low]["mean"]
    share_gap = share(high) - share(low)
    return {
        "low": low, "high": high,
        "final_is": [methods[low]["mean"], methods[high]["mean"]],
        "generator_share": [share(low), share(high)],
        "segments_per_run": segments,
        "effect_per_segment": final_gap / share_gap / segments,
    }


def measurement_noise(ratio, updates, repeats, seed):
    """Train one quick-mode GAN, then score fresh samples `repeats` times.

    Also returns the standard deviation of the change between consecutive
    evaluations during training, which includes training's own swings.
    """
    from autoloss_models import gan_experiments
    from autoloss_models import inception_score

    gan_experiments.set_determinism(seed)
    settings = gan_experiments.settings_for("quick", total_updates=updates)
    classifier = inception_score.load_classifier(dataset="mnist")
    images = gan_experiments.load_training_images("mnist")
    run = gan_experiments.GanRun(
        settings, gan_experiments.fixed_ratio_schedule(ratio), images,
        classifier, seed,
    )
    started = time.perf_counter()
    run.evaluate()
    while not run.finished:
        run.train_chunk()
    scores = [run.evaluate() for _ in range(repeats)]
    changes = np.diff([score for _, score in run.curve[:-repeats]])
    later = changes[len(changes) // 2:]
    return {
        "ratio": ratio, "updates": updates, "seed": seed,
        "eval_samples": settings.eval_samples,
        "repeated_scores": scores,
        "measurement_std": float(np.std(scores, ddof=1)),
        "consecutive_change_std_second_half": float(np.std(later, ddof=1)),
        "seconds": round(time.perf_counter() - started, 1),
    }


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", required=True,
                        help="history.json of a GAN controller training")
    parser.add_argument("--comparison", required=True,
                        help="JSON of `autoloss compare gan`")
    parser.add_argument("--low", default="1:1",
                        help="fixed ratio with the lower generator share")
    parser.add_argument("--high", default="1:5",
                        help="fixed ratio with the higher generator share")
    parser.add_argument("--updates", type=int, default=1500,
                        help="updates of the GAN whose IS noise is measured")
    parser.add_argument("--repeats", type=int, default=10,
                        help="IS measurements of the same weights")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args(argv)
    if args.repeats < 2:
        parser.error(f"--repeats must be >= 2. Received: {args.repeats}.")
    if args.updates < 100 or args.updates % 100:
        parser.error("--updates must be a positive multiple of 100 (the "
                     f"quick mode's IS interval). Received: {args.updates}.")
    return args


def main(argv=None):
    args = parse_args(argv)
    with open(args.history) as file:
        history = json.load(file)
    with open(args.comparison) as file:
        comparison = json.load(file)

    updates_per_run = history["settings"]["total_updates"]
    fit = share_coefficient(segment_rows(history["history"]),
                            updates_per_run)
    effect = implied_effect(comparison, args.low, args.high)
    needed = (2.0 * fit["residual_std"]
              / (effect["effect_per_segment"] * fit["share_std"])) ** 2
    noise = measurement_noise(args.high, args.updates, args.repeats,
                              args.seed)
    results = {
        "command": "python " + " ".join(sys.argv),
        "history": args.history, "comparison": args.comparison,
        "training_fit": fit, "fixed_ratio_effect": effect,
        "segments_for_two_standard_errors": float(needed),
        "runs_for_two_standard_errors": float(
            needed / effect["segments_per_run"]),
        "measurement_noise": noise,
    }
    print(json.dumps(results, indent=2))
    if args.json:
        with open(args.json, "w") as file:
            json.dump(results, file, indent=2)
            file.write("\n")


if __name__ == "__main__":
    main()
