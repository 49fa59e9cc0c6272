"""PNG plots of comparison results and controller training histories."""

import matplotlib

matplotlib.use("Agg")

import zlib  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

# Colours of the comparison methods, fixed by name so that a plot of some
# methods (`compare --methods`) colours them as a plot of all of them.
# The GAN names cover full mode's ratios.
_METHOD_COLORS = {
    "AutoLoss": "tab:red",
    "MT": "tab:blue", "FixedRatio": "tab:orange", "FineTunedMT": "tab:green",
    "1:1": "tab:blue", "1:3": "tab:orange", "1:5": "tab:green",
    "1:7": "tab:purple", "1:9": "tab:brown", "1:11": "tab:pink",
    "3:1": "tab:gray", "5:1": "tab:olive", "7:1": "tab:cyan",
    "9:1": "navy", "11:1": "black",
}


def method_color(method):
    """Return the plot colour of a comparison method.

    Names outside the fixed table get a colour of matplotlib's tab20
    palette chosen by a checksum of the name, so it is the same in every
    plot but may equal another method's.
    """
    if method in _METHOD_COLORS:
        return _METHOD_COLORS[method]
    palette = plt.get_cmap("tab20").colors
    return palette[zlib.crc32(str(method).encode("utf-8")) % len(palette)]


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


# GAN ---------------------------------------------------------------------

def plot_gan_curves(results, path):
    """Draw IS vs updates per method: the mean over trials and its range."""
    figure, axis = plt.subplots(figsize=(8, 5))
    for method, entry in results["methods"].items():
        steps, scores = _aligned_curves(entry["curves"])
        mean = scores.mean(axis=0)
        color = method_color(method)
        axis.plot(steps, mean, color=color,
                  label=f"{method} ({entry['mean']:.2f})")
        if scores.shape[0] > 1:
            axis.fill_between(steps, scores.min(axis=0), scores.max(axis=0),
                              color=color, alpha=0.15)
    axis.set_xlabel("updates (D + G)")
    axis.set_ylabel("Inception Score")
    dataset = results.get("dataset")
    data_label = "" if dataset is None else f" on {dataset}"
    axis.set_title(
        f"gan{data_label} ({results.get('mode', '?')} mode): mean of "
        f"{results['trials']} trials, shaded min to max; legend: final IS"
    )
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _aligned_curves(curves):
    """Return (steps, scores [trials, points]) cut to the shortest curve."""
    length = min(len(curve) for curve in curves)
    steps = np.asarray([point[0] for point in curves[0][:length]])
    scores = np.asarray([[point[1] for point in curve[:length]]
                         for curve in curves], dtype="float64")
    return steps, scores


def plot_gan_probabilities(results, path):
    """Draw each method's probability of a G and a D update over training.

    For a learned schedule the probability is the controller's, averaged
    over the updates before each point. For a fixed ratio it is the
    pattern's share of G updates.
    """
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for method, entry in results["methods"].items():
        runs = entry["p_generator"]
        length = min(len(run) for run in runs)
        steps = np.asarray([point[0] for point in runs[0][:length]])
        values = np.asarray([[point[1] for point in run[:length]]
                             for run in runs], dtype="float64")
        style = "-" if method == "AutoLoss" else ":"
        mean = values.mean(axis=0)
        color = method_color(method)
        top.plot(steps, mean, style, color=color, label=method)
        bottom.plot(steps, 1 - mean, style, color=color, label=method)
    top.set_ylabel("P(generator update)")
    bottom.set_ylabel("P(discriminator update)")
    bottom.set_xlabel("updates (D + G)")
    top.set_ylim(-0.02, 1.02)
    bottom.set_ylim(-0.02, 1.02)
    top.legend(fontsize=8, ncol=2)
    top.set_title("probability of each action, mean over trials")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_sample_grids(samples, path, columns=8):
    """Draw a grid of generated images per method, side by side.

    Args:
        samples: dict method -> images [N, height, width, channels] in
            [-1, 1]. Up to `columns * columns` images of each are drawn.
        path: PNG path.
        columns: images per grid row. Defaults to 8.
    """
    names = list(samples)
    figure, axes = plt.subplots(1, len(names),
                                figsize=(2.6 * len(names), 2.9), squeeze=False)
    for axis, name in zip(axes[0], names):
        axis.imshow(_image_grid(samples[name], columns), cmap="gray",
                    vmin=0.0, vmax=1.0)
        axis.set_title(name)
        axis.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _image_grid(images, columns):
    images = (np.asarray(images, dtype="float64")[: columns * columns] + 1) / 2
    count, height, width = images.shape[:3]
    rows = -(-count // columns)
    grid = np.ones((rows * height, columns * width))
    for index in range(count):
        row, column = divmod(index, columns)
        grid[row * height:(row + 1) * height,
             column * width:(column + 1) * width] = images[index, ..., 0]
    return np.clip(grid, 0.0, 1.0)


def plot_gan_controller_history(history, path):
    """Draw IS, reward and P(generator update) per controller segment."""
    entries = history["history"]
    index = np.arange(len(entries))
    figure, axes = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    axes[0].plot(index, [e["inception_score"] for e in entries], ".-")
    axes[0].set_ylabel("IS at segment end")
    rewards = [np.nan if e["reward"] is None else e["reward"] for e in entries]
    axes[1].plot(index, rewards, ".")
    axes[1].axhline(0.0, color="gray", linewidth=0.5)
    axes[1].set_ylabel("segment reward")
    axes[2].plot(index, [e["p_generator"] for e in entries], ".-")
    # Dashed gray lines mark the first segment of every GAN run after the
    # first, where the IS drops back to about 1 with the new GAN.
    runs = [e["run"] for e in entries]
    for position in range(1, len(entries)):
        if runs[position] != runs[position - 1]:
            for axis in axes:
                axis.axvline(position - 0.5, color="gray", linestyle="--",
                             linewidth=0.6)
    collapsed = [i for i, e in enumerate(entries) if e["collapsed"]]
    for position in collapsed:
        for axis in axes:
            axis.axvline(position, color="red", alpha=0.3)
    axes[2].set_ylim(-0.02, 1.02)
    axes[2].set_ylabel("P(generator update)")
    label = "segment (dashed: a new GAN run starts"
    if collapsed:
        label += "; red: collapse guard fired"
    axes[2].set_xlabel(label + ")")
    axes[0].set_title(f"GAN controller training: {len(set(runs))} runs, "
                      f"{len(entries)} segments")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_gan_search_history(history, path):
    """Draw a run-level controller search, one column per generation.

    Top: the final IS of every run, + and - members of a pair joined by a
    line. Bottom: each run's mean probability of a generator update.
    """
    entries = history["history"]
    figure, axes = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for entry in entries:
        generation = entry["generation"]
        pairs = zip(entry["rewards_plus"], entry["rewards_minus"],
                    entry["p_generator_plus"], entry["p_generator_minus"])
        for index, (plus, minus, p_plus, p_minus) in enumerate(pairs):
            offset = 0.08 * (index - (len(entry["rewards_plus"]) - 1) / 2)
            x = [generation + offset - 0.02, generation + offset + 0.02]
            axes[0].plot(x, [plus, minus], color="gray", linewidth=0.6)
            axes[0].plot(x[0], plus, "^", color="tab:blue")
            axes[0].plot(x[1], minus, "v", color="tab:orange")
            axes[1].plot(x, [p_plus, p_minus], color="gray", linewidth=0.6)
            axes[1].plot(x[0], p_plus, "^", color="tab:blue")
            axes[1].plot(x[1], p_minus, "v", color="tab:orange")
    generations = [entry["generation"] for entry in entries]
    axes[0].plot(generations,
                 [entry["mean_final_inception_score"] for entry in entries],
                 "k-", label="generation mean")
    axes[0].set_ylabel("final IS of a run")
    axes[0].legend(loc="lower right")
    axes[1].set_ylabel("mean P(generator update)")
    axes[1].set_xlabel("generation (up triangles: center + noise; down: "
                       "center - noise)")
    axes[1].set_xticks(generations)
    axes[0].set_title(f"GAN controller search: {len(entries)} generations")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_gan_architectures(results, path):
    """Draw the final IS of each architecture without and with a controller.

    Left: paired bars per architecture. Right: IS with the controller
    against IS without it; points above the diagonal are architectures
    the controller helped.
    """
    entries = results["architectures"]
    without = np.asarray([e["without_controller"]["final"] for e in entries])
    with_controller = np.asarray([e["with_controller"]["final"]
                                  for e in entries])
    positions = np.arange(len(entries))
    figure, (bars, scatter) = plt.subplots(
        1, 2, figsize=(max(9, 0.45 * len(entries) + 5), 4.8),
        gridspec_kw={"width_ratios": [max(2, len(entries) / 6), 1]},
    )
    width = 0.4
    bars.bar(positions - width / 2, without, width,
             label=f"without ({results['baseline']})")
    bars.bar(positions + width / 2, with_controller, width,
             label="with controller")
    bars.set_xticks(positions,
                    [f"{e['index']}: {e['label']}" for e in entries],
                    rotation=90, fontsize=7)
    bars.set_ylabel("final Inception Score")
    bars.legend(fontsize=8)
    summary = results["summary"]
    figure.suptitle(
        f"{results['n']} architectures, {results['updates_per_run']} updates "
        f"per run ({results['mode']} mode): final IS higher with the "
        f"controller in {summary['helped']} of {summary['compared']}, mean "
        f"difference {summary['mean_difference']:+.2f}", fontsize=10,
    )
    scatter.scatter(without, with_controller, s=18)
    for entry, x, y in zip(entries, without, with_controller):
        scatter.annotate(str(entry["index"]), (x, y), fontsize=7,
                         xytext=(3, 3), textcoords="offset points")
    low = float(min(without.min(), with_controller.min()))
    high = float(max(without.max(), with_controller.max()))
    margin = 0.05 * max(high - low, 0.1)
    limits = (low - margin, high + margin)
    scatter.plot(limits, limits, color="gray", linewidth=0.8)
    scatter.set_xlim(limits)
    scatter.set_ylim(limits)
    scatter.set_xlabel("final IS without the controller")
    scatter.set_ylabel("final IS with the controller")
    scatter.set_title("labels: architecture index", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


# NMT ---------------------------------------------------------------------

_NMT_AXES = (
    (0, "counted seconds"),
    (1, "steps (all tasks)"),
    (2, "translation steps"),
)


def plot_nmt_curves(results, path):
    """Draw validation perplexity per method against seconds and steps.

    The three panels have counted seconds, total steps and translation
    steps on the x axis. Every trial is one line, and the legend gives the
    final perplexity (mean over trials).
    """
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.5), sharey=True)
    for method, entry in results["methods"].items():
        color = method_color(method)
        for trial, curve in enumerate(entry["curves"]):
            points = np.asarray(curve, dtype="float64")
            label = f"{method} ({entry['mean']:.1f})" if trial == 0 else None
            for axis, (column, _) in zip(axes, _NMT_AXES):
                axis.plot(points[:, column], points[:, 3], color=color,
                          alpha=0.8, linewidth=1.2, label=label)
    for axis, (_, name) in zip(axes, _NMT_AXES):
        axis.set_xlabel(name)
        axis.set_yscale("log")
    axes[0].set_ylabel("validation perplexity")
    axes[0].legend(fontsize=8)
    figure.suptitle(
        f"nmt ({results.get('mode', '?')} mode): {results['trials']} "
        "trial(s), one line each; legend: final perplexity, mean"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_nmt_probabilities(results, path):
    """Draw each method's probability of each task over training steps.

    For AutoLoss the probability is the controller's softmax output,
    averaged over the steps of each segment and over trials. For the
    baselines it is their schedule's probability.
    """
    methods = results["methods"]
    tasks = ("mt", "pos", "lemma")
    figure, axes = plt.subplots(1, len(tasks), figsize=(15, 4), sharey=True)
    for method, entry in methods.items():
        runs = entry["probabilities"]
        length = min(len(run) for run in runs)
        values = np.asarray([run[:length] for run in runs], dtype="float64")
        steps = values[0, :, 0]
        style = "-" if method == "AutoLoss" else ":"
        # A constant schedule can have one recorded point, which a line
        # alone would not show.
        marker = "o" if length == 1 else None
        for column, axis in enumerate(axes, start=1):
            axis.plot(steps, values[:, :, column].mean(axis=0), style,
                      color=method_color(method), marker=marker,
                      label=method)
    for task, axis in zip(tasks, axes):
        axis.set_title(f"P({task})")
        axis.set_xlabel("steps (all tasks)")
        axis.set_ylim(-0.02, 1.02)
    axes[0].set_ylabel("probability, mean over trials")
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_nmt_controller_history(history, path):
    """Draw perplexity, reward and task probabilities per controller segment."""
    entries = history["history"]
    index = np.arange(len(entries))
    figure, axes = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    axes[0].plot(index, [e["perplexity"] for e in entries], ".-")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("validation perplexity")
    rewards = [np.nan if e["reward"] is None else e["reward"] for e in entries]
    axes[1].plot(index, rewards, ".")
    axes[1].axhline(0.0, color="gray", linewidth=0.5)
    updates = [i for i, e in enumerate(entries) if e.get("ppo")]
    for position in updates:
        axes[1].axvline(position, color="green", alpha=0.3)
    axes[1].set_ylabel("segment reward")
    probabilities = np.asarray([e["probabilities"] for e in entries])
    for column, task in enumerate(("mt", "pos", "lemma")):
        axes[2].plot(index, probabilities[:, column], ".-", label=task)
    axes[2].set_ylim(-0.02, 1.02)
    axes[2].set_ylabel("controller probability")
    axes[2].set_xlabel("segment (green: PPO update)")
    axes[2].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
