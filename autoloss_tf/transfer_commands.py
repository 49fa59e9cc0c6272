"""The `autoloss transfer` sub-commands: a GAN controller on new settings.

- `transfer gan-architectures`: the MNIST GAN controller guides DCGANs of
  sampled architectures, each compared with the same architecture trained
  without the controller (D and G alternating 1:1).
- `transfer gan-data`: the MNIST GAN controller guides the default DCGAN on
  another data set, against the fixed D:G ratios of `compare gan`.

`cli.py` parses the arguments. The experiments live in
`autoloss_models.gan_transfer` and `autoloss_models.gan_experiments`.
"""

import os
import time

from tqdm import tqdm

from autoloss_tf import gan_commands
from autoloss_tf.commands import UsageError
from autoloss_tf.commands import check_json_target
from autoloss_tf.commands import machine_description
from autoloss_tf.commands import misplaced_options_error
from autoloss_tf.commands import write_json

ARCHITECTURES, DATA = "gan-architectures", "gan-data"
EXPERIMENTS = (ARCHITECTURES, DATA)
DEFAULT_ARCHITECTURES = 20
DEFAULT_DATASET = "fashion_mnist"
SHIPPED_CONTROLLER_LABEL = "saved_controllers/gan_mnist (shipped)"
# Data sets that `transfer gan-data` can train on: a local source of
# training images and a shipped IS classifier.
TRANSFER_DATASETS = ("fashion_mnist",)
# Options that only one experiment reads, by argparse dest.
ARCHITECTURES_ONLY = ("n", "work_dir", "fail_below")
DATA_ONLY = ("dataset", "trials")


def _transfer():
    # Imported here so `autoloss --help` does not load TensorFlow.
    from autoloss_models import gan_transfer

    return gan_transfer


def _experiments():
    from autoloss_models import gan_experiments

    return gan_experiments


def default_controller_dir():
    """Return the directory of the shipped MNIST GAN controller."""
    from autoloss_tf.cli import DEFAULT_CONTROLLERS

    return os.path.join(DEFAULT_CONTROLLERS, "gan_mnist")


def run(args, command):
    """Check the options of `args.name`, then run that experiment."""
    check_options(args)
    if args.seed < 0:
        raise UsageError(
            f"--seed must be >= 0. Received: --seed {args.seed}. Pass 0 or "
            "more."
        )
    if args.name == ARCHITECTURES:
        return architectures(args, command)
    return data(args, command)


def check_options(args):
    """Reject options given for the experiment that does not read them."""
    wrong = ARCHITECTURES_ONLY if args.name == DATA else DATA_ONLY
    misplaced = [name for name in wrong if getattr(args, name) is not None]
    if misplaced:
        other = ARCHITECTURES if args.name == DATA else DATA
        raise misplaced_options_error(
            misplaced, f"`transfer {other}`", f"with `transfer {args.name}`"
        )


def transfer_settings(args, quick_updates):
    """Return the `GanSettings` of `--mode` with the updates per run set.

    Without `--updates`, quick mode runs `quick_updates` updates per GAN
    run and full mode its own 20,000.
    """
    experiments = _experiments()
    mode = args.mode or "quick"
    base = experiments.settings_for(mode)
    updates = args.updates
    if updates is None:
        updates = quick_updates if mode == "quick" else base.total_updates
    segment = base.segment_length
    if updates < segment or updates % segment:
        raise UsageError(
            f"--updates sets the updates per GAN run and must be a positive "
            f"multiple of the segment length {segment} ({mode} mode). "
            f"Received: --updates {updates}. Pass for example "
            f"{max(segment, updates - updates % segment)}."
        )
    return experiments.settings_for(mode, total_updates=updates)


def _load_controller(args):
    """Return (label for results, loaded controller) of `--controller`."""
    if args.controller is not None:
        return args.controller, gan_commands.load_gan_controller(
            args.controller)
    loaded = gan_commands.load_gan_controller(default_controller_dir())
    return SHIPPED_CONTROLLER_LABEL, loaded


# transfer gan-architectures -------------------------------------------------

def architectures(args, command):
    """Train sampled DCGANs with and without the controller; compare them."""
    transfer = _transfer()
    count = DEFAULT_ARCHITECTURES if args.n is None else args.n
    space = len(transfer.all_architectures())
    if not 1 <= count <= space:
        raise UsageError(
            f"--n must be in [1, {space}], because the sampling space has "
            f"{space} distinct architectures. Received: --n {count}. Run "
            "another --seed for more GAN seeds."
        )
    if args.fail_below is not None and not args.fail_below > 0:
        raise UsageError(
            f"--fail-below must be a positive IS. Received: --fail-below "
            f"{args.fail_below}. Pass for example 6, the paper's threshold."
        )
    settings = transfer_settings(args, transfer.QUICK_UPDATES)
    check_json_target(args.json)
    work_dir = args.work_dir or os.path.join(
        "runs", "transfer", f"{ARCHITECTURES}-{settings.mode}-seed{args.seed}"
    )
    if os.path.exists(work_dir) and not os.path.isdir(work_dir):
        raise UsageError(
            f"--work-dir must be a directory. Received: {work_dir}, a file. "
            "Pass a new or existing directory."
        )
    controller_label, loaded = _load_controller(args)
    sampled = transfer.sample_architectures(count, args.seed)

    experiments = _experiments()
    experiments.set_determinism(args.seed)
    images, classifier = gan_commands.load_data()
    runner = transfer.ArchitectureTransfer(
        settings, loaded.controller, images, classifier, sampled, args.seed,
        work_dir, identity={
            # The weights, not the path, identify the controller, so a
            # retrained controller at the same path is rejected.
            "controller_fingerprint": transfer.controller_fingerprint(
                loaded.controller),
        },
    )
    try:
        done = runner.resume()
    except transfer.TransferResumeError as error:
        raise UsageError(str(error)) from error
    sized = ""
    if args.updates is None and settings.mode == "quick":
        sized = (" (the quick-mode default, sized so that 40 runs take "
                 "roughly 45-60 minutes on 2 CPU cores)")
    print(
        f"transfer {ARCHITECTURES} ({settings.mode} mode): {count} "
        f"architectures, each trained without the controller ("
        f"{transfer.BASELINE}) and with {controller_label}; "
        f"{settings.total_updates} updates per run{sized}; {done} of "
        f"{runner.runs_total} runs already in {work_dir}"
    )
    started = time.time()
    _run_architectures(runner, settings)
    results = summarize_architectures(
        runner, settings, args, command, controller_label, loaded,
        work_dir, time.time() - started,
    )
    print(format_architectures(results))
    print(f"Checkpoint: {runner.state_path}")
    if args.json:
        write_json(args.json, results)
        print(f"Results written to {args.json}")
    return results


def _run_architectures(runner, settings):
    total = runner.runs_total * settings.total_updates
    done = runner.runs_done * settings.total_updates
    bar = tqdm(total=total, initial=done, unit="update",
               desc=ARCHITECTURES)

    def finished(entry, method):
        bar.set_postfix(arch=entry["index"], run=method.split("_")[0],
                        IS=f"{entry[method]['final']:.2f}")

    try:
        runner.run(progress=bar.update, run_finished=finished)
    finally:
        bar.close()


def summarize_architectures(runner, settings, args, command,
                            controller_label, loaded, work_dir, elapsed):
    """Return the results dictionary of `transfer gan-architectures`."""
    transfer = _transfer()
    entries = runner.entries
    summary = transfer.summarize_pairs(entries, args.fail_below)
    for entry, difference in zip(entries, summary["differences"]):
        entry["difference"] = difference
    return {
        "transfer": ARCHITECTURES,
        "task": gan_commands.TASK,
        "dataset": "mnist",
        "metric": "inception_score",
        "higher_is_better": True,
        "n": len(entries),
        "seed": args.seed,
        "command": command,
        "mode": settings.mode,
        "updates_per_run": settings.total_updates,
        "updates_note": (
            f"quick mode runs {transfer.QUICK_UPDATES} updates per GAN run, "
            "so that 40 runs take an estimated 40-50 minutes on 2 CPU cores "
            "free of other jobs. The estimate comes from the process CPU "
            "time per update measured on 2 shared cores: 25, 54 and "
            "141-157 ms with 32, 64 and 128 base filters. Full mode runs "
            f"{_experiments().settings_for('full').total_updates}. "
            "--updates overrides both."
        ),
        "baseline": transfer.BASELINE,
        "baseline_note": (
            "without the controller, D and G alternate 1:1 (the paper's "
            "comparison in Figure 4, left); both runs of an architecture "
            "use GAN seed seed + index"
        ),
        "settings": settings.to_dict(),
        "settings_note": (
            "base_filters and latent_dim of each run are its architecture's"
        ),
        "controller_inputs_note": _controller_inputs_note(loaded),
        "architecture_space": {
            "base_filters": list(transfer.BASE_FILTERS),
            "latent_dim": list(transfer.LATENT_DIMS),
            "batch_norm": list(transfer.BATCH_NORMS),
            "activation": list(transfer.ACTIVATIONS),
            "sampling": "distinct architectures in a seeded random order; "
                        "the activation applies to both G and D",
        },
        "final_metric_note": (
            f"mean IS of the last {settings.final_evaluations} evaluations "
            f"(every {settings.eval_interval} updates, "
            f"{settings.eval_samples} samples, shipped MNIST classifier)"
        ),
        "controller": controller_label,
        "controller_fingerprint": runner.identity["controller_fingerprint"],
        "controller_training": loaded.metadata.get("training", {}),
        "machine": machine_description(),
        # This invocation's time; run_seconds adds up every run's time,
        # including runs of earlier invocations read from the checkpoint.
        "elapsed_seconds": round(elapsed, 1),
        "run_seconds": round(sum(
            entry[method]["seconds"] for entry in entries
            for method in transfer.METHODS
        ), 1),
        "work_dir": work_dir,
        "summary": summary,
        "architectures": entries,
    }


def _controller_inputs_note(loaded):
    """Return how the controller's inputs shift with the architecture."""
    names = loaded.metadata.get("feature_names", [])
    scales = loaded.metadata.get("feature_scale", [])
    divisor = dict(zip(names, scales)).get("grad_norm/generator")
    scale = "" if divisor is None else f" (divided by {divisor:g})"
    return (
        f"the controller reads G's normalized gradient norm{scale} at the "
        "scale of the 64-filter DCGAN with batch norm it was trained on; "
        "without batch norm that norm was 3 to 10 times smaller in "
        "300-update runs. The progress input t/T grows faster in runs "
        "shorter than the controller's training runs."
    )


def format_architectures(results):
    """Return a text table of final IS per architecture and the summary."""
    summary = results["summary"]
    lines = [
        f"{ARCHITECTURES} ({results['mode']} mode, "
        f"{results['updates_per_run']} updates per run), final IS, seed "
        f"{results['seed']}",
        f"{'#':>3}  {'architecture':<26}{'without':>9}{'with':>9}"
        f"{'with-w/o':>10}",
    ]
    for entry in results["architectures"]:
        lines.append(
            f"{entry['index']:>3}  {entry['label']:<26}"
            f"{entry['without_controller']['final']:>9.3f}"
            f"{entry['with_controller']['final']:>9.3f}"
            f"{entry['difference']:>+10.3f}"
        )
    lines.append(
        f"The controller gives a higher final IS in {summary['helped']} of "
        f"{summary['compared']} architectures; mean difference "
        f"{summary['mean_difference']:+.3f} (std "
        f"{summary['std_difference']:.3f}); mean IS without "
        f"{summary['mean_without']:.3f}, with {summary['mean_with']:.3f}."
    )
    if summary["fail_below"] is not None:
        mean = summary["mean_difference_excluding_failed"]
        lines.append(
            f"Leaving out {len(summary['failed'])} architectures where both "
            f"runs end below IS {summary['fail_below']:g}: higher in "
            f"{summary['helped_excluding_failed']} of "
            f"{summary['compared_excluding_failed']}"
            + ("." if mean is None else f", mean difference {mean:+.3f}.")
        )
    return "\n".join(lines)


# transfer gan-data ----------------------------------------------------------

def check_dataset(dataset):
    """Reject a data set that `transfer gan-data` cannot train on."""
    if dataset in TRANSFER_DATASETS:
        return
    if dataset == "mnist":
        raise UsageError(
            "transfer gan-data moves the MNIST controller to another data "
            "set. Received: --dataset mnist. Run `autoloss compare gan` for "
            f"MNIST, or pass --dataset {DEFAULT_DATASET}."
        )
    raise UsageError(
        f"Unknown data set for transfer gan-data. Received: --dataset "
        f"{dataset}. Pass one of {', '.join(TRANSFER_DATASETS)} (each has "
        "local training images and a shipped IS classifier)."
    )


def data(args, command):
    """Train GANs on another data set with the fixed ratios and AutoLoss."""
    experiments = _experiments()
    dataset = args.dataset or DEFAULT_DATASET
    check_dataset(dataset)
    trials = gan_commands.DEFAULT_TRIALS if args.trials is None else args.trials
    if trials < 1:
        raise UsageError(
            f"--trials must be >= 1. Received: --trials {trials}."
        )
    settings = transfer_settings(args, experiments.settings_for(
        "quick").total_updates)
    check_json_target(args.json)
    controller_label, loaded = _load_controller(args)

    experiments.set_determinism(args.seed)
    images, classifier = gan_commands.load_data(dataset)
    methods = experiments.comparison_methods(settings)
    print(f"transfer {DATA} to {dataset} ({settings.mode} mode): methods "
          f"{', '.join(methods)}, AutoLoss guided by {controller_label}; "
          f"{trials} trial{'s' if trials != 1 else ''} of "
          f"{settings.total_updates} updates each")
    started = time.time()
    total = experiments.updates_per_comparison(settings, trials)
    with tqdm(total=total, unit="update", desc=f"{DATA} {dataset}") as bar:
        methods_results = experiments.run_comparison(
            settings, loaded.controller, images, classifier, trials,
            seed=args.seed, progress=bar.update,
        )
    args.controller = controller_label
    results = gan_commands.summarize(
        methods_results, settings, args, command, loaded, trials,
        time.time() - started,
        classifier_note=f"shipped {dataset} classifier",
    )
    results = {"transfer": DATA, "dataset": dataset, **results}
    print(format_data(results))
    if args.json:
        gan_commands.write_results(results, methods_results, args.json)
        print(f"Results written to {args.json}")
    return results


def format_data(results):
    """Return the `compare gan` table with the data set in its title."""
    table = gan_commands.format_table(results)
    return f"{DATA} to {results['dataset']}: " + table


# plot -----------------------------------------------------------------------

def plot(content, path, out):
    """Write the PNGs of a `transfer` JSON; return their paths.

    gan-architectures gets one figure of paired final IS per architecture.
    gan-data gets the figures of `compare gan`.
    """
    from autoloss_tf import plots

    name = content.get("transfer")
    if name == ARCHITECTURES:
        plots.plot_gan_architectures(content, out)
        return [out]
    if name == DATA:
        return gan_commands.plot(content, path, out)
    raise UsageError(
        f"{path} names an unknown transfer experiment {name!r}. Pass a JSON "
        f"written by `autoloss transfer` ({', '.join(EXPERIMENTS)})."
    )
