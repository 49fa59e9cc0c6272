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
