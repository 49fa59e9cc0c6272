"""The `autoloss` sub-commands for the DCGAN-on-MNIST task (`gan`).

`cli.py` parses the arguments and sends a command whose task is `gan`
here. The experiments themselves live in `autoloss_models.gan_experiments`.
"""

import os
import time

import numpy as np
from tqdm import tqdm

from autoloss_tf import export as export_lib
from autoloss_tf.commands import GAN_SEARCH_OPTIONS
from autoloss_tf.commands import L1_ONLY_OPTIONS
from autoloss_tf.commands import UsageError
from autoloss_tf.commands import check_json_target
from autoloss_tf.commands import check_online_training_target
from autoloss_tf.commands import load_controller_for_task
from autoloss_tf.commands import machine_description
from autoloss_tf.commands import misplaced_options_error
from autoloss_tf.commands import plural
from autoloss_tf.commands import reject_options
from autoloss_tf.commands import resume_online_trainer
from autoloss_tf.commands import select_methods
from autoloss_tf.commands import write_json

TASK = "gan"
DEFAULT_RUNS = 5
# Six generations of three antithetic pairs.
DEFAULT_SEARCH_RUNS = 36
SEARCH = "search"
DEFAULT_TRIALS = 3
# Options of `train-controller`, `guide` and `compare` that only the L1
# tasks read, and those that only the GAN and NMT tasks read.
GAN_ONLY_OPTIONS = ("runs", "mode", "methods")


def _experiments():
    # Imported here so `autoloss --help` does not load TensorFlow.
    from autoloss_models import gan_experiments

    return gan_experiments


def check_options(task, explicit):
    """Reject options given explicitly that `task` does not read.

    Args:
        task: the task argument.
        explicit: names (argparse dests) of the options whose values differ
            from their defaults.
    """
    if task == TASK:
        reject_options(task, explicit, L1_ONLY_OPTIONS,
                       "the L1 tasks (regression, classification)")
    else:
        reject_options(task, explicit, GAN_ONLY_OPTIONS, "the gan and nmt tasks")
        reject_options(task, explicit, GAN_SEARCH_OPTIONS, "the gan task")


def gan_settings(args):
    """Return the `GanSettings` of `--mode` with `--max-steps` applied."""
    experiments = _experiments()
    mode = args.mode or "quick"
    settings = experiments.settings_for(mode)
    max_steps = getattr(args, "max_steps", None)
    if max_steps is None:
        return settings
    segment = settings.segment_length
    if max_steps < segment or max_steps % segment:
        raise UsageError(
            f"--max-steps for gan sets the updates per GAN run and must be "
            f"a positive multiple of the segment length {segment} "
            f"({mode} mode). Received: --max-steps {max_steps}. Pass for "
            f"example {max(segment, max_steps - max_steps % segment)}."
        )
    return experiments.settings_for(mode, total_updates=max_steps)


def load_data(dataset="mnist"):
    """Return (training images, IS classifier) of the GAN task on `dataset`."""
    from autoloss_models import inception_score

    return (_experiments().load_training_images(dataset),
            inception_score.load_classifier(dataset=dataset))


def load_gan_controller(directory, option="--controller"):
    """Load an exported controller and check that it was trained for gan.

    `option` is the command-line option that named `directory`.
    """
    experiments = _experiments()
    return load_controller_for_task(
        directory, TASK, experiments.FEATURE_NAMES, experiments.ACTION_NAMES,
        option=option,
    )


# train-controller ---------------------------------------------------------

def train_controller(args, command):
    """Train a GAN controller over `--runs` GAN runs; export it.

    With `--estimator online` (the default) the controller learns along
    with each run, one update per segment; with `--estimator search` it
    learns from whole runs (`train_controller_by_search`).
    """
    if getattr(args, "estimator", "online") == SEARCH:
        return train_controller_by_search(args, command)
    search_only = [name for name in ("pairs", "start_controller",
                                     "bias_sigma", "weight_sigma")
                   if getattr(args, name, None) is not None]
    if getattr(args, "workers", 1) != 1:
        search_only.append("workers")
    if search_only:
        raise misplaced_options_error(search_only, "--estimator search",
                                      "with the online estimator")
    experiments = _experiments()
    settings = gan_settings(args)
    runs = DEFAULT_RUNS if args.runs is None else args.runs
    state_dir = os.path.join(args.out, "training")
    check_online_training_target(
        args, runs, os.path.join(state_dir, experiments.CHECKPOINT_FILE)
    )

    experiments.set_determinism(args.seed)
    images, classifier = load_data()
    trainer = experiments.OnlineControllerTrainer(
        settings, state_dir, images, classifier, seed=args.seed
    )
    if args.resume:
        resume_online_trainer(trainer, args, "--mode, --max-steps and --seed")
    _train_with_progress(trainer, runs, settings)

    info = _export(trainer, args, command, runs)
    print(
        f"Trained {info['runs']} GAN runs ({info['segments']} segments). "
        f"Final IS of the last run: {info['final_inception_score']:.3f}. "
        f"Controller written to {args.out}"
    )
    return info


def train_controller_by_search(args, command):
    """Train a GAN controller by run-level antithetic search; export it."""
    from autoloss_models import gan_search

    experiments = _experiments()
    settings = gan_settings(args)
    state_dir = os.path.join(args.out, "training")
    checkpoint = os.path.join(state_dir, gan_search.CHECKPOINT_FILE)
    saved = (gan_search.read_checkpoint_summary(checkpoint)
             if args.resume and os.path.isfile(checkpoint) else None)
    pairs = args.pairs
    if pairs is None and saved is not None:
        # A resume keeps the checkpoint's pairs unless --pairs is given.
        pairs = saved["pairs"]
    overrides = {"pairs": pairs, "bias_sigma": args.bias_sigma,
                 "weight_sigma": args.weight_sigma}
    try:
        search = gan_search.SearchSettings(
            **{name: value for name, value in overrides.items()
               if value is not None})
    except ValueError as error:
        raise UsageError(f"--estimator search: {error}") from None
    per_generation = search.runs_per_generation
    runs = DEFAULT_SEARCH_RUNS if args.runs is None else args.runs
    if runs < per_generation or runs % per_generation:
        raise UsageError(
            f"--runs with --estimator search must be a positive multiple of "
            f"2 * pairs = {per_generation}, so every generation is whole. "
            f"Received: --runs {runs}. Pass for example "
            f"{max(per_generation, runs - runs % per_generation)}."
        )
    if saved is not None and runs < saved["runs_done"]:
        raise UsageError(
            f"The checkpoint in {args.out} has {saved['runs_done']} runs "
            f"done, more than --runs {runs}. Pass a larger --runs to "
            "continue the search."
        )
    _check_workers(args.workers)
    check_online_training_target(args, runs, checkpoint)
    start = None
    if args.start_controller is not None:
        start = load_gan_controller(args.start_controller,
                                    option="--start-controller")
        kind = start.metadata.get("controller_kind")
        if kind != "linear":
            raise UsageError(
                f"--start-controller {args.start_controller} contains a "
                f"controller of kind {kind!r}, but the search perturbs a "
                "linear one. Pass a linear GAN controller such as "
                "saved_controllers/gan_mnist."
            )

    experiments.set_determinism(args.seed)
    images, classifier = (None, None) if args.workers > 1 else load_data()
    controller = experiments.make_controller()
    if start is not None:
        gan_search.set_controller_parameters(
            controller, gan_search.controller_parameters(start.controller))
    trainer = gan_search.ControllerSearch(
        settings, search, state_dir, images, classifier, seed=args.seed,
        controller=controller, workers=args.workers,
    )
    if args.resume:
        resume_online_trainer(
            trainer, args,
            "--mode, --max-steps, --pairs, --bias-sigma, --weight-sigma, "
            "--start-controller and --seed")
    generations = runs // per_generation
    bar = tqdm(total=runs * settings.total_updates,
               initial=trainer.runs_done * settings.total_updates,
               unit="update", desc="controller search")

    def report(result):
        bar.update(settings.total_updates)
        bar.set_postfix(generation=trainer.generation,
                        IS=f"{result['final']:.2f}",
                        p_G=f"{result['p_generator']:.2f}")

    try:
        trainer.train(generations, progress=report)
    finally:
        bar.close()

    history = trainer.history
    last = history[-1]
    info = {
        "task": TASK, "estimator": SEARCH, "command": command,
        "seed": args.seed, "mode": settings.mode,
        "settings": settings.to_dict(), "search": search.to_dict(),
        "runs": trainer.runs_done, "requested_runs": runs,
        "generations": len(history),
        "start_controller": args.start_controller,
        "start_controller_training": (
            None if start is None else start.metadata.get("training")),
        "final_inception_score": last["mean_final_inception_score"],
        "final_inception_score_note": (
            f"mean final IS (mean of the last {settings.final_evaluations} "
            "evaluations) of the runs of the last generation, which ran "
            "under perturbed controllers"
        ),
        "gan_seeds": [history[0]["seeds"][0], history[-1]["seeds"][-1]],
        "task_model_updates": int(trainer.runs_done * settings.total_updates),
        "machine": machine_description(),
    }
    export_lib.export_controller(
        trainer.export_controller(), args.out,
        feature_names=list(experiments.FEATURE_NAMES),
        action_names=list(experiments.ACTION_NAMES), training=info,
        overwrite=True,
    )
    print(
        f"Trained {plural(info['runs'], 'GAN run')} "
        f"({plural(info['generations'], 'generation')} of "
        f"{plural(search.pairs, 'pair')}). Mean final IS of the last "
        f"generation: {info['final_inception_score']:.3f}. Controller "
        f"written to {args.out}"
    )
    return info


def _check_workers(workers):
    if workers < 1:
        raise UsageError(
            f"--workers must be >= 1. Received: --workers {workers}."
        )


def _train_with_progress(trainer, runs, settings):
    total = runs * settings.total_updates
    done = trainer.updates_done
    bar = tqdm(total=total, initial=min(done, total), unit="update",
               desc="controller")

    def report(entry):
        bar.update(settings.segment_length)
        bar.set_postfix(run=entry["run"], IS=f"{entry['inception_score']:.2f}",
                        p_G=f"{entry['p_generator']:.2f}")

    try:
        trainer.train(runs, progress=report)
    finally:
        bar.close()


def _export(trainer, args, command, runs):
    experiments = _experiments()
    history = trainer.history
    last_run = trainer.runs[-1] if trainer.runs else None
    info = {
        "task": TASK, "command": command, "seed": args.seed,
        "mode": trainer.settings.mode, "settings": trainer.settings.to_dict(),
        "runs": len(trainer.runs), "requested_runs": runs,
        "segments": len(history),
        "collapses": int(sum(bool(e["collapsed"]) for e in history)),
        "final_inception_score": (
            None if last_run is None else last_run["final_inception_score"]
        ),
        "final_inception_score_note": (
            "mean IS of the last "
            f"{trainer.settings.final_evaluations} evaluations of the last "
            "controller-training run"
        ),
        "task_model_updates": int(trainer.updates_done),
        "machine": machine_description(),
    }
    export_lib.export_controller(
        trainer.controller, args.out,
        feature_names=list(experiments.FEATURE_NAMES),
        action_names=list(experiments.ACTION_NAMES), training=info,
        overwrite=True,
    )
    return info


# guide --------------------------------------------------------------------

def guide(args):
    """Train one new GAN under a trained controller; print its IS."""
    experiments = _experiments()
    if args.controller is None:
        raise UsageError(
            "guide gan needs --controller DIR: the shipped "
            "saved_controllers/gan_mnist, or one trained with "
            "`autoloss train-controller gan --out DIR`."
        )
    settings = gan_settings(args)
    loaded = load_gan_controller(args.controller)
    experiments.set_determinism(args.seed)
    images, classifier = load_data()
    with tqdm(total=settings.total_updates, unit="update",
              desc="guided gan") as bar:
        result = experiments.guided_run(
            settings, loaded.controller, images, classifier, args.seed,
            progress=bar.update, decoding=args.decoding,
        )
    fractions = [p for _, p in result["p_generator"]]
    print(
        f"gan guided by {args.controller} (seed {args.seed}, "
        f"{settings.mode} mode): final IS {result['final']:.3f} (mean of "
        f"the last {settings.final_evaluations} evaluations), "
        f"{settings.total_updates} updates, mean probability of a "
        f"generator update {np.mean(fractions):.2f}, generator updates "
        f"taken {result['generator_share']:.2f} ({args.decoding} decoding)"
    )
    return result


# compare ------------------------------------------------------------------

def compare(args, command):
    """Run the fixed D:G ratios (and AutoLoss) for some trials; print them."""
    experiments = _experiments()
    settings = gan_settings(args)
    trials = DEFAULT_TRIALS if args.trials is None else args.trials
    if trials < 1:
        raise UsageError(f"--trials must be >= 1. Received: {trials}.")
    check_json_target(args.json)
    loaded = None
    if args.controller is not None:
        loaded = load_gan_controller(args.controller)
    methods = select_methods(
        args.methods,
        experiments.comparison_methods(settings, loaded is not None),
        without_controller=None if loaded is not None else
        experiments.AUTOLOSS,
    )
    if args.decoding != "sample" and experiments.AUTOLOSS not in methods:
        raise UsageError(
            "--decoding sets how AutoLoss runs take actions, but this "
            f"comparison runs no AutoLoss (methods: {', '.join(methods)}). "
            "Pass --controller DIR and keep AutoLoss in --methods, or "
            "remove --decoding."
        )

    workers = getattr(args, "workers", 1)
    _check_workers(workers)

    experiments.set_determinism(args.seed)
    images, classifier = (None, None) if workers > 1 else load_data()
    print(f"gan {settings.mode} mode: methods {', '.join(methods)}; "
          f"{trials} trial{'s' if trials != 1 else ''} of "
          f"{settings.total_updates} updates each"
          + (f"; {workers} worker processes" if workers > 1 else ""))
    started = time.time()
    total = len(methods) * trials * settings.total_updates
    with tqdm(total=total, unit="update", desc="compare gan") as bar:
        methods_results = experiments.run_comparison(
            settings, None if loaded is None else loaded.controller,
            images, classifier, trials, seed=args.seed, progress=bar.update,
            methods=methods, workers=workers, controller_dir=args.controller,
            decoding=args.decoding,
        )

    results = summarize(methods_results, settings, args, command, loaded,
                        trials, time.time() - started)
    print(format_table(results))
    if args.json:
        write_results(results, methods_results, args.json)
        print(f"Results written to {args.json}")
    return results


def summarize(methods_results, settings, args, command, loaded, trials,
              elapsed, classifier_note="shipped MNIST classifier"):
    """Return the results dictionary written by `compare gan --json`.

    `classifier_note` names the IS classifier in `final_metric_note`.
    """
    methods = {}
    for name, entry in methods_results.items():
        methods[name] = {key: entry[key] for key in
                         ("mean", "std", "values", "curves", "p_generator",
                          "generator_share")
                         if key in entry}
        if "updates_to_reach" in entry:
            methods[name]["updates_to_reach"] = entry["updates_to_reach"]
    results = {
        "task": TASK,
        "metric": "inception_score",
        "higher_is_better": True,
        "trials": trials,
        "seed": args.seed,
        "command": command,
        "mode": settings.mode,
        "settings": settings.to_dict(),
        "final_metric_note": (
            f"mean IS of the last {settings.final_evaluations} evaluations "
            f"(every {settings.eval_interval} updates, "
            f"{settings.eval_samples} samples, {classifier_note})"
        ),
        "controller": args.controller,
        # How AutoLoss runs took actions from the controller, if any ran.
        "decoding": (getattr(args, "decoding", "sample")
                     if _experiments().AUTOLOSS in methods_results else None),
        "controller_training": (
            {} if loaded is None else loaded.metadata.get("training", {})
        ),
        "machine": machine_description(),
        "workers": getattr(args, "workers", 1),
        "elapsed_seconds": round(elapsed, 1),
        "methods": methods,
    }
    # Without the reference method, no run has a target to reach.
    if experiments_reference() in methods:
        results["updates_to_reach_note"] = (
            f"updates until the mean of the last "
            f"{settings.final_evaluations} IS evaluations first reaches the "
            f"final IS of the {experiments_reference()} run with the same "
            "seed; null if never"
        )
    return results


def write_results(results, methods_results, path):
    """Write the JSON and, next to it, the generated samples per method.

    The samples go to `<json stem>_samples.npz`, one array per method
    (images of trial 0's final generator, in [-1, 1]). The JSON stores the
    file name under `samples_file`.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    samples_path = os.path.splitext(path)[0] + "_samples.npz"
    np.savez_compressed(samples_path, **{
        name: entry["samples"] for name, entry in methods_results.items()
    })
    results["samples_file"] = os.path.basename(samples_path)
    write_json(path, results)


def experiments_reference():
    """Return the method whose final IS the other runs try to reach."""
    return _experiments().REACH_REFERENCE


def format_table(results):
    """Return a text table of final IS per method.

    The `reach` column gives the median updates a method's runs needed to
    reach the reference method's final IS, over the runs that reached it,
    with how many of the trials did.
    """
    reference = experiments_reference()
    with_reach = reference in results["methods"]
    title = (f"gan ({results['mode']} mode), final {results['metric']} "
             f"(higher is better), {results['trials']} trials, seed "
             f"{results['seed']}")
    header = f"{'method':<12}{'mean':>10}{'std':>10}"
    if with_reach:
        title += (f"; reach: median updates to reach {reference}'s final "
                  "IS (trials that reached it)")
        header += f"{'reach':>16}"
    lines = [title, header]
    for method, entry in results["methods"].items():
        line = f"{method:<12}{entry['mean']:>10.3f}{entry['std']:>10.3f}"
        if with_reach:
            reached = [u for u in entry.get("updates_to_reach", [])
                       if u is not None]
            reach = (f"{int(np.median(reached))} ({len(reached)}/"
                     f"{len(entry['values'])})" if reached else "-")
            line += f"{reach:>16}"
        lines.append(line)
    return "\n".join(lines)


# plot ---------------------------------------------------------------------

def plot(content, path, out):
    """Write the PNGs of a GAN compare JSON or GAN controller history.

    Returns:
        The list of PNG paths written.
    """
    from autoloss_tf import plots

    stem = os.path.splitext(out)[0]
    if "methods" in content:
        # The samples file is checked first, so that a missing one stops
        # the command before any PNG is written.
        grids = None
        samples_file = content.get("samples_file")
        if samples_file is not None:
            samples_path = os.path.join(
                os.path.dirname(os.path.abspath(path)), samples_file
            )
            if not os.path.isfile(samples_path):
                raise UsageError(
                    f"Samples file not found: {samples_path}, named in "
                    f"{path}. Keep it next to the JSON, as `compare gan` "
                    "wrote it."
                )
            with np.load(samples_path) as samples:
                grids = {name: samples[name] for name in samples.files}

        written = [out, stem + "_p_generator.png"]
        plots.plot_gan_curves(content, written[0])
        plots.plot_gan_probabilities(content, written[1])
        if grids is not None:
            written.append(stem + "_samples.png")
            plots.plot_sample_grids(grids, written[-1])
        return written
    if content.get("estimator") == SEARCH:
        plots.plot_gan_search_history(content, out)
    else:
        plots.plot_gan_controller_history(content, out)
    return [out]
