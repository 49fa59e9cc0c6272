"""PNG plots of comparison results and controller training histories."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_comparison(results, path):
    """Draw each method's per-trial test metric with its mean and std."""
    methods = list(results["methods"])
    figure, axis = plt.subplots(figsize=(7, 4))
    for position, method in enumerate(methods):
        entry = results["methods"][method]
        values = np.asarray(entry["values"])
        jitter = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else [0]
        axis.scatter(position + np.asarray(jitter), values, s=14, alpha=0.6)
        axis.errorbar(position, entry["mean"], yerr=entry["std"], fmt="_",
                      color="black", capsize=6, markersize=18)
    axis.set_xticks(range(len(methods)), methods)
    axis.set_ylabel(f"test {results['metric']}")
    axis.set_yscale("log")
    axis.set_title(
        f"{results['task']} ({results.get('dataset', 'synthetic')}): "
        f"{results['trials']} trials, seed {results['seed']}"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_controller_history(history, path, window=20):
    """Draw validation metric and L1 fraction per controller episode."""
    episodes = history["episodes"]
    index = np.arange(len(episodes))
    metric = np.asarray([e["metric"] for e in episodes])
    fraction = np.asarray([e["regularizer_fraction"] for e in episodes])
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    top.plot(index, metric, ".", alpha=0.3, label="episode")
    top.plot(index, _moving_average(metric, window), label=f"mean of {window}")
    top.set_ylabel("validation metric")
    top.legend()
    bottom.plot(index, fraction, ".", alpha=0.3)
    bottom.plot(index, _moving_average(fraction, window))
    bottom.set_ylabel("fraction of L1 steps")
    bottom.set_xlabel("episode")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _moving_average(values, window):
    result = np.empty(len(values))
    for i in range(len(values)):
        result[i] = values[max(0, i - window + 1): i + 1].mean()
    return result


def plot_study(results, path):
    """Draw the figure of a study result written by `autoloss study`."""
    drawers = {
        "lambda-robustness": _plot_lambda_robustness,
        "budget": _plot_budget,
        "transfer-data": _plot_transfer_data,
        "ablation": _plot_ablation,
    }
    figure, axis = plt.subplots(figsize=(7, 4))
    drawers[results["study"]](results, axis)
    trials = results["trials"]
    axis.set_title(
        f"{results['study']} {results['task']}: {trials} "
        f"trial{'' if trials == 1 else 's'}, seed {results['seed']}"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _plot_lambda_robustness(results, axis):
    lambdas = np.asarray(results["lambdas"])
    for method, entry in results["methods"].items():
        label = "task + lambda * L1" if method == "combined" else method
        axis.errorbar(lambdas, entry["mean"], yerr=entry["std"], marker="o",
                      capsize=4, label=label)
    axis.axhline(results["without_l1"]["mean"], color="gray", linestyle="--",
                 label="without L1")
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("lambda (weight of the L1 term)")
    axis.set_ylabel(f"test {results['metric']}")
    axis.legend()


def _plot_budget(results, axis):
    trials = results["per_trial"]
    for index, trial in enumerate(trials):
        first = index == 0
        axis.step(trial["dgs_batches"], trial["dgs_metric"], where="post",
                  color="tab:blue", alpha=0.25, label="DGS, each trial" if first else None)
        axis.plot(trial["autoloss_batches"], trial["autoloss_metric"],
                  color="tab:orange", alpha=0.25,
                  label="AutoLoss, each trial" if first else None)
    autoloss_batches = np.mean([t["autoloss_batches"] for t in trials], axis=0)
    autoloss_mean = np.mean([t["autoloss_metric"] for t in trials], axis=0)
    axis.plot(autoloss_batches, autoloss_mean, color="tab:orange", linewidth=2,
              label="AutoLoss, mean")
    grid = np.geomspace(
        max(1, min(t["dgs_batches"][0] for t in trials)),
        max(t["dgs_batches"][-1] for t in trials), 200,
    )
    dgs_mean = np.mean([_step_values(t["dgs_batches"], t["dgs_metric"], grid)
                        for t in trials], axis=0)
    axis.plot(grid, dgs_mean, color="tab:blue", linewidth=2, label="DGS, mean")
    axis.axhline(np.mean([t["dgs_final"] for t in trials]), color="gray",
                 linestyle="--", label="DGS final, mean")
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("task-model batches scanned")
    axis.set_ylabel(f"test {results['metric']}")
    axis.legend(fontsize=8)


def _step_values(batches, values, grid):
    """Value of a step curve at each grid point; its first value before it."""
    positions = np.searchsorted(batches, grid, side="right") - 1
    return np.asarray(values)[np.clip(positions, 0, len(values) - 1)]


def _plot_transfer_data(results, axis):
    names = list(results["data_sets"])
    methods = ("without_l1", "DGS", "AutoLoss")
    width = 0.8 / len(methods)
    for offset, method in enumerate(methods):
        means = [results["data_sets"][n]["methods"][method]["mean"] for n in names]
        stds = [results["data_sets"][n]["methods"][method]["std"] for n in names]
        positions = np.arange(len(names)) + (offset - 1) * width
        axis.bar(positions, means, width, yerr=stds, capsize=3, label=method)
    axis.set_xticks(range(len(names)), names)
    axis.set_ylabel(f"test {results['metric']}")
    axis.legend()


def _plot_ablation(results, axis):
    names = list(results["variants"])
    means = [results["variants"][n]["mean"] for n in names]
    stds = [results["variants"][n]["std"] for n in names]
    axis.bar(range(len(names)), means, yerr=stds, capsize=4)
    axis.axhline(results["DGS"]["mean"], color="gray", linestyle="--",
                 label="DGS")
    axis.set_xticks(range(len(names)), [f"drop {n}" for n in names],
                    rotation=15)
    axis.set_ylabel(f"test {results['metric']}")
    axis.legend(loc="lower right")
