"""The `autoloss` sub-commands; `cli.py` parses their arguments."""

import dataclasses
import json
import math
import os
import platform
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from autoloss_tf import __version__
from autoloss_tf import export as export_lib
from autoloss_tf import features as features_lib
from autoloss_tf import training

ACTION_NAMES = ("task", "l1")
# Episodes averaged for the final validation metric of a trained controller.
FINAL_EPISODES = 20


class UsageError(Exception):
    """A bad command-line value; `main` prints it and exits with 2."""


# Errors that `main` reports as one line with exit status 2.
COMMAND_ERRORS = (
    UsageError, export_lib.ControllerLoadError,
    export_lib.ControllerMismatchError,
)


def _experiments():
    # Imported here so `autoloss --help` does not load TensorFlow.
    from autoloss_models import l1_experiments

    return l1_experiments


def task_spec(args):
    """Return the task's `TaskSpec` with `--max-steps` applied; check it."""
    spec = _experiments().get_task(args.task)
    if args.task == "regression" and args.dataset != "synthetic":
        raise UsageError(
            "--dataset applies to classification only. "
            f"Received: --dataset {args.dataset} for regression."
        )
    max_steps = getattr(args, "max_steps", None)
    if max_steps is None:
        return spec
    if max_steps < 1:
        raise UsageError(f"--max-steps must be >= 1. Received: {max_steps}.")
    return dataclasses.replace(
        spec, max_steps=max_steps, patience=min(spec.patience, max_steps),
        steps_per_execution=min(spec.steps_per_execution, max_steps),
    )


def _feature_names():
    return features_lib.feature_names(ACTION_NAMES)


def machine_description():
    """Return a one-line description of this machine for result files."""
    return (
        f"{platform.machine()}, {os.cpu_count()} CPU cores, "
        f"{platform.system()} {platform.release()}, Python "
        f"{platform.python_version()}"
    )


def default_controller_dir(task, dataset="synthetic"):
    """Return the shipped controller directory of a task."""
    from autoloss_tf.cli import DEFAULT_CONTROLLERS

    name = task if dataset == "synthetic" else f"{task}_{dataset}"
    return os.path.join(DEFAULT_CONTROLLERS, name)


def load_task_controller(directory, task):
    """Load an exported controller and check it against an L1 task."""
    return load_controller_for_task(
        directory, task, _feature_names(), ACTION_NAMES
    )


def load_controller_for_task(directory, task, feature_names, action_names,
                             option="--controller"):
    """Load an exported controller; check its names and its training task.

    `option` is the command-line option that named `directory`, for the
    error messages.
    """
    if not os.path.exists(directory):
        raise UsageError(
            f"Controller directory not found: {directory}. Pass {option} "
            f"with a directory written by `autoloss train-controller {task}`."
        )
    if not os.path.isdir(directory):
        raise UsageError(
            f"{option} must be a directory, not a file. Received: "
            f"{directory}. Pass the directory that contains metadata.json."
        )
    if not os.path.isfile(os.path.join(directory, "metadata.json")):
        raise UsageError(
            f"{directory} contains no metadata.json, so it is not an "
            f"exported controller. Pass {option} with a directory written "
            f"by `autoloss train-controller {task}`."
        )
    metadata_task = _exported_task(directory)
    if metadata_task is not None and metadata_task != task:
        raise UsageError(
            f"The controller in {directory} was trained for {metadata_task}, "
            f"but the task is {task}; their features and actions differ. "
            f"Pass {option} with a controller trained with `autoloss "
            f"train-controller {task}`."
        )
    loaded = export_lib.load_controller(
        directory, feature_names=list(feature_names),
        action_names=list(action_names),
    )
    trained_for = loaded.metadata.get("training", {}).get("task")
    if trained_for is not None and trained_for != task:
        raise UsageError(
            f"The controller in {directory} was trained for {trained_for}, "
            f"but the task is {task}; their feature scales differ. Pass a "
            f"controller trained with `autoloss train-controller {task}`."
        )
    return loaded


def _exported_task(directory):
    """Return the training task named in an export's metadata, or None."""
    try:
        with open(os.path.join(directory, "metadata.json")) as f:
            metadata = json.load(f)
    except (OSError, ValueError):
        return None
    training = metadata.get("training") if isinstance(metadata, dict) else None
    return training.get("task") if isinstance(training, dict) else None


# train-controller ----------------------------------------------------------

def train_controller(args, command):
    """Train a controller by REINFORCE and export it to `args.out`."""
    experiments = _experiments()
    spec = task_spec(args)
    _check_training_arguments(args)
    state_dir = os.path.join(args.out, "training")
    has_checkpoint = os.path.exists(os.path.join(state_dir, "checkpoint.npz"))
    if has_checkpoint and not args.resume:
        raise UsageError(
            f"{args.out} already contains a controller-training checkpoint. "
            "Pass --resume to continue it, or choose another --out."
        )
    data_sets = _controller_data_sets(args, spec)
    learning_rate = args.learning_rate or spec.controller_learning_rate
    # Reproducible reruns of the same command need deterministic kernels.
    tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(args.seed)
    controller = experiments.make_controller(
        spec, kind=args.controller_kind, seed=args.seed
    )
    updater = training.ReinforceUpdater(
        controller, learning_rate=learning_rate,
        baseline_decay=spec.baseline_decay, advantage_clip=spec.advantage_clip,
    )
    splits = [
        spec.splits(experiments.controller_data_seed(args.seed, index),
                    args.dataset)
        for index in range(data_sets)
    ]
    trainer = training.EpisodicTrainer(
        updater,
        experiments.controller_batch_runner(spec, controller, splits, args.seed),
        state_dir, episodes_per_batch=args.episodes_per_batch,
        baseline=args.baseline,
    )
    trainer.settings = _training_settings(args, data_sets, learning_rate)
    done = _resume(trainer, args) if args.resume else 0
    _run_with_progress(trainer, args.episodes, done)
    info = _export_trained(trainer, controller, spec, args, command)
    print(
        f"Trained {info['episodes']} episodes. Mean validation "
        f"{'MSE' if spec.name == 'regression' else 'error'} of the last "
        f"{min(FINAL_EPISODES, info['episodes'])}: "
        f"{info['final_validation_metric']:.4f}. "
        f"Controller written to {args.out}"
    )


def _check_training_arguments(args):
    if args.episodes < 1:
        raise UsageError(f"--episodes must be >= 1. Received: {args.episodes}.")
    if args.episodes_per_batch < 1:
        raise UsageError(
            "--episodes-per-batch must be >= 1. "
            f"Received: {args.episodes_per_batch}."
        )
    if args.learning_rate is not None and not args.learning_rate > 0:
        raise UsageError(
            f"--learning-rate must be > 0. Received: {args.learning_rate}."
        )
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UsageError(
            f"--out must be a directory. Received: {args.out}, a file."
        )


def _controller_data_sets(args, spec):
    data_sets = args.data_sets
    if data_sets is None:
        data_sets = (
            1 if args.dataset == "breast_cancer" else spec.controller_data_sets
        )
    if data_sets < 1 or (args.dataset == "breast_cancer" and data_sets != 1):
        raise UsageError(
            "--data-sets must be >= 1, and 1 for the single breast-cancer "
            f"data set. Received: --data-sets {args.data_sets}."
        )
    return data_sets


def _training_settings(args, data_sets, learning_rate):
    """Return the settings a resumed run must share with the checkpoint."""
    return {
        "task": args.task, "dataset": args.dataset, "seed": args.seed,
        "max_steps": args.max_steps, "episodes_per_batch":
        args.episodes_per_batch, "data_sets": data_sets,
        "learning_rate": learning_rate, "baseline": args.baseline,
        "controller_kind": args.controller_kind,
    }


def check_online_training_target(args, runs, checkpoint):
    """Raise UsageError for a bad `--runs` or `--out` of online training.

    Args:
        args: the parsed arguments, with `out` and `resume`.
        runs: the requested number of task runs.
        checkpoint: path of the trainer's checkpoint file under `--out`.
    """
    if runs < 1:
        raise UsageError(f"--runs must be >= 1. Received: --runs {runs}.")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UsageError(
            f"--out must be a directory. Received: {args.out}, a file."
        )
    check_writable_directory(args.out, "--out")
    if os.path.exists(checkpoint) and not args.resume:
        raise UsageError(
            f"{args.out} already contains a controller-training checkpoint. "
            "Pass --resume to continue it, or choose another --out."
        )
    # Another trainer's checkpoint, or an export without this trainer's
    # checkpoint, would be overwritten by this training's export.
    state_dir = os.path.dirname(checkpoint)
    others = sorted(
        name for name in (os.listdir(state_dir) if os.path.isdir(state_dir)
                          else [])
        if name.endswith(".npz") and name != os.path.basename(checkpoint)
        and ".tmp." not in name
    )
    if others:
        raise UsageError(
            f"{args.out} contains the checkpoint {others[0]} of another "
            "estimator, whose export this training would replace. Choose "
            "another --out."
        )
    exported = os.path.isfile(os.path.join(args.out, "metadata.json"))
    if exported and not os.path.exists(checkpoint):
        raise UsageError(
            f"{args.out} already contains an exported controller, which "
            "this training would replace. Choose another --out."
        )


def resume_online_trainer(trainer, args, options):
    """Load an online trainer's checkpoint; reject one with other settings.

    Args:
        trainer: a GAN or NMT `OnlineControllerTrainer`, or a GAN
            `ControllerSearch` (whose `settings_dict()` is compared).
        args: the parsed arguments, with `out`.
        options: the command-line options that set the checkpoint's
            settings, named in the error, e.g. "--mode and --seed".
    """
    done = trainer.resume()
    saved = trainer.saved_settings
    settings = (trainer.settings_dict() if hasattr(trainer, "settings_dict")
                else trainer.settings.to_dict())
    current = dict(settings, seed=trainer.seed)
    if saved is not None:
        saved = dict(saved, seed=trainer.saved_seed)
    if saved is not None and saved != current:
        missing = sorted(set(current) - set(saved))
        if missing:
            raise UsageError(
                f"The checkpoint in {args.out} was written by a version "
                f"without the settings {missing}, so it cannot be resumed. "
                "Choose another --out to start a new training."
            )
        changed = {key: (saved.get(key), value)
                   for key, value in current.items()
                   if saved.get(key) != value}
        raise UsageError(
            "--resume needs the settings of the checkpoint in "
            f"{args.out}. Changed (checkpoint, now): {changed}. Rerun with "
            f"the checkpoint's {options}, or choose another --out."
        )
    if done == 0 and saved is None:
        print(f"No checkpoint in {args.out}; starting from the first run.")


def _resume(trainer, args):
    done = trainer.resume()
    if done == 0:
        print(f"No checkpoint in {args.out}; starting from episode 0.")
        return 0
    saved = trainer.saved_settings
    if saved is not None and saved != trainer.settings:
        changed = {
            key: (saved.get(key), value)
            for key, value in trainer.settings.items()
            if saved.get(key) != value
        }
        raise UsageError(
            "--resume needs the settings of the checkpoint in "
            f"{args.out}. Changed (checkpoint, now): {changed}. Rerun with "
            "the checkpoint's settings, or choose another --out."
        )
    if done >= args.episodes:
        print(f"{args.out} already has {done} episodes (--episodes "
              f"{args.episodes}); nothing to train. Exporting it again.")
    return done


def check_json_target(path):
    if path is None:
        return
    if os.path.isdir(path):
        raise UsageError(f"--json must be a file path. Received: {path}, a directory.")
    # A file in the way fails here, not when writing after a long run.
    check_writable_directory(os.path.dirname(os.path.abspath(path)),
                             "--json")


def _run_with_progress(trainer, episodes, done):
    bar = tqdm(total=episodes, initial=done, unit="episode", desc="controller")

    def report(entry):
        bar.update(1)
        bar.set_postfix(metric=f"{entry['metric']:.4f}",
                        l1=f"{entry['regularizer_fraction']:.2f}")

    try:
        trainer.train(episodes, progress=report)
    finally:
        bar.close()


def _export_trained(trainer, controller, spec, args, command):
    """Export the controller with its training record; return the record."""
    history = trainer.history
    last = history[-FINAL_EPISODES:]
    info = {"command": command, **trainer.settings}
    info.update({
        "episodes": len(history),
        "final_validation_metric": float(np.mean([e["metric"] for e in last])),
        "final_validation_metric_note": (
            f"mean {spec.name} validation metric on the controller "
            f"validation partition over the last {len(last)} episodes"
        ),
        "task_model_batches": int(sum(e["steps"] for e in history)),
    })
    # overwrite=True replaces only the export's own entries, so the
    # checkpoint under `training/` stays for a later --resume.
    export_lib.export_controller(
        controller, args.out, feature_names=_feature_names(),
        action_names=list(ACTION_NAMES), training=info, overwrite=True,
    )
    return info


# guide ------------------------------------------------------------------

def guide(args):
    """Train one task model on fresh data under a controller; print it."""
    experiments = _experiments()
    spec = task_spec(args)
    directory = args.controller or default_controller_dir(args.task)
    loaded = load_task_controller(directory, spec.name)
    data_seed = experiments.trial_seed(args.seed, 0)
    result = experiments.guided_run(
        spec, loaded.controller, data_seed, seed=args.seed,
        dataset=args.dataset, decoding=args.decoding,
    )
    print(
        f"{spec.name} guided by {directory} (data seed {data_seed}): test "
        f"{spec.metric} {result['test']:.4f}, {result['steps']} steps, "
        f"L1 on {100 * result['l1_fraction']:.1f}% of steps"
    )
    return result


# compare ------------------------------------------------------------------

def compare(args, command):
    """Run every Table-1 method on fresh data and print a table."""
    experiments = _experiments()
    spec = task_spec(args)
    if args.trials < 1:
        raise UsageError(f"--trials must be >= 1. Received: {args.trials}.")
    directory = args.controller or default_controller_dir(args.task)
    loaded = load_task_controller(directory, spec.name)
    controller_label = (
        args.controller or f"saved_controllers/{args.task} (shipped)"
    )
    check_json_target(args.json)
    started = time.time()
    trials = []
    for trial in tqdm(range(args.trials), unit="trial", desc=f"compare {spec.name}"):
        data_seed = experiments.trial_seed(args.seed, trial)
        trials.append(experiments.run_comparison_trial(
            spec, loaded.controller, data_seed, model_seed=trial,
            dataset=args.dataset,
        ))
    results = summarize(spec, trials, args, command, loaded.metadata,
                        controller_label, time.time() - started)
    print(format_table(results))
    if args.json:
        write_json(args.json, results)
        print(f"Results written to {args.json}")
    return results


def write_json(path, results):
    """Write `results` to the JSON file `path`, creating its directory."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(results, f, indent=2)


def summarize(spec, trials, args, command, metadata, directory, elapsed):
    """Return the results dictionary written by `compare --json`."""
    methods = {}
    for method in trials[0]:
        values = [trial[method]["test"] for trial in trials]
        methods[method] = {
            "mean": float(np.mean(values)),
            "std": float(np.std(values)),
            "values": values,
            "steps": [trial[method]["steps"] for trial in trials],
        }
    methods["DGS"]["lambdas"] = [t["DGS"]["lambda"] for t in trials]
    for rule in ("S1", "S2", "S3"):
        methods[rule]["thresholds"] = [t[rule]["threshold"] for t in trials]
    difference = np.subtract(methods["AutoLoss"]["values"],
                             methods["DGS"]["values"])
    training_info = metadata.get("training", {})
    controller_batches = int(training_info.get("task_model_batches", 0))
    guided = float(np.mean(methods["AutoLoss"]["steps"]))
    return {
        "task": spec.name,
        "metric": spec.metric,
        "higher_is_better": False,
        "trials": args.trials,
        "seed": args.seed,
        "command": command,
        "dataset": args.dataset,
        "controller": directory,
        "controller_training": training_info,
        "machine": machine_description(),
        "elapsed_seconds": round(elapsed, 1),
        "methods": methods,
        "autoloss_minus_dgs": {
            "mean": float(difference.mean()),
            "std": float(difference.std()),
            "values": difference.tolist(),
        },
        "cost_batches": {
            "DGS_per_trial": float(np.mean([t["DGS"]["grid_steps"] for t in trials])),
            "S1_per_trial": float(np.mean([t["S1"]["grid_steps"] for t in trials])),
            "S2_per_trial": float(np.mean([t["S2"]["grid_steps"] for t in trials])),
            "S3_per_trial": float(np.mean([t["S3"]["grid_steps"] for t in trials])),
            "without_l1_per_trial": float(np.mean(methods["without_l1"]["steps"])),
            "AutoLoss_controller_training_once": controller_batches,
            "AutoLoss_guided_per_trial": guided,
        },
    }


def format_table(results):
    """Return a Table-1 style text table of a results dictionary."""
    lines = [
        f"{results['task']} ({results['dataset']}), test {results['metric']}, "
        f"{results['trials']} trials, seed {results['seed']}",
        f"{'method':<12}{'mean':>10}{'std':>10}",
    ]
    for method, entry in results["methods"].items():
        lines.append(f"{method:<12}{entry['mean']:>10.4f}{entry['std']:>10.4f}")
    diff = results["autoloss_minus_dgs"]
    lines.append(
        f"AutoLoss - DGS per trial: {diff['mean']:+.4f} (std {diff['std']:.4f})"
    )
    cost = results["cost_batches"]
    lines.append(
        "cost in task-model batches: DGS {:.0f} per trial; AutoLoss {} once "
        "for the controller + {:.0f} per trial".format(
            cost["DGS_per_trial"], cost["AutoLoss_controller_training_once"],
            cost["AutoLoss_guided_per_trial"],
        )
    )
    return "\n".join(lines)


# study ------------------------------------------------------------------

STUDY_EPISODES = {"regression": 320, "classification": 400}


def study(args, command):
    """Run one of the further L1 studies; print its table, write JSON."""
    from autoloss_models import l1_studies

    allowed = l1_studies.STUDY_TASKS[args.name]
    if args.task not in allowed:
        raise UsageError(
            f"The {args.name} study runs on {' and '.join(allowed)}. "
            f"Received: {args.task}. Run `autoloss study {args.name} "
            f"{allowed[0]}`."
        )
    spec = task_spec(args)
    episodes = STUDY_EPISODES[args.task] if args.episodes is None else args.episodes
    if episodes < 2:
        raise UsageError(
            f"--episodes must be >= 2. Received: {episodes}. Pass 2 or more; "
            "a batch of controller training has up to 16 episodes."
        )
    if args.trials < 1:
        raise UsageError(
            f"--trials must be >= 1. Received: {args.trials}. Pass 1 or more."
        )
    if args.seed < 0:
        raise UsageError(
            f"--seed must be >= 0. Received: {args.seed}. Pass 0 or more."
        )
    if args.lambdas is not None and args.name != "lambda-robustness":
        raise UsageError(
            "--lambdas applies to the lambda-robustness study only. "
            f"Remove it from `autoloss study {args.name}`.")
    if args.controller is not None and args.name != "transfer-data":
        raise UsageError(
            "--controller applies to the transfer-data study only. "
            f"Remove it from `autoloss study {args.name}`.")
    lambdas = args.lambdas or l1_studies.DEFAULT_LAMBDAS[args.task]
    _check_lambdas(lambdas)
    check_json_target(args.json)
    work_dir = args.work_dir or os.path.join(
        "runs", "study", f"{args.name}-{args.task}-seed{args.seed}"
    )
    if os.path.exists(work_dir) and not os.path.isdir(work_dir):
        raise UsageError(
            f"--work-dir must be a directory. Received: {work_dir}, a file. "
            "Pass a new or existing directory.")
    loaded = None
    controller = None
    if args.controller is not None:
        loaded = load_task_controller(args.controller, args.task)
        controller = loaded.controller
    else:
        check_writable_directory(work_dir, "--work-dir")
    tf.config.experimental.enable_op_determinism()
    started = time.time()
    try:
        if args.name == "lambda-robustness":
            results = l1_studies.lambda_robustness(
                spec, lambdas, args.trials, args.seed, episodes, work_dir)
        elif args.name == "budget":
            results = l1_studies.budget(
                spec, args.trials, args.seed, episodes, work_dir)
        elif args.name == "transfer-data":
            results = l1_studies.transfer_data(
                spec, args.trials, args.seed, episodes, work_dir,
                controller=controller)
            if loaded is not None:
                # A given controller has its own training record; this
                # study trained nothing and did not read --episodes.
                results.update(
                    episodes=None, source_spec=None,
                    controller={"directory": args.controller,
                                "training": loaded.metadata.get("training", {})},
                )
                work_dir = None
        else:
            results = l1_studies.ablation(
                spec, args.trials, args.seed, episodes, work_dir)
    except l1_studies.StudyResumeError as error:
        raise UsageError(str(error)) from error
    results.update({
        "command": command, "seed": args.seed, "trials": args.trials,
        "max_steps": spec.max_steps, "work_dir": work_dir,
        "machine": machine_description(),
        "elapsed_seconds": round(time.time() - started, 1),
    })
    print(format_study(results))
    if work_dir is not None:
        print(f"Controller checkpoints are in {work_dir}")
    if args.json:
        write_json(args.json, results)
        print(f"Results written to {args.json}")
    return results


def _check_lambdas(lambdas):
    from autoloss_models import l1_studies

    if not all(math.isfinite(v) and v > 0 for v in lambdas):
        raise UsageError(
            f"--lambdas must all be finite and > 0. Received: {lambdas}. "
            "Pass positive weights such as 0.01 0.1 1."
        )
    directories = [l1_studies.lambda_directory("", v) for v in lambdas]
    if len(set(directories)) != len(directories):
        raise UsageError(
            f"--lambdas must differ in their first 6 significant digits, "
            f"because each names a controller directory. Received: {lambdas}. "
            "Remove the repeated values."
        )


def check_writable_directory(directory, option):
    """Create `directory` if needed and check that files can be written."""
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory):
            pass
    except OSError as error:
        raise UsageError(
            f"{option}: cannot write to {directory} ({error.strerror}). "
            "Pass a path in a writable directory."
        ) from error


def plural(count, word):
    return f"{count} {word}" + ("" if count == 1 else "s")


def format_study(results):
    """Return a text table of a study's results dictionary."""
    name = results["study"]
    trained = (
        "given controller" if results["episodes"] is None
        else f"{results['episodes']} episodes per controller"
    )
    lines = [
        f"{name} {results['task']}: test {results['metric']}, "
        f"{plural(results['trials'], 'trial')}, seed {results['seed']}, "
        f"{trained}"
    ]
    if name == "lambda-robustness":
        lines.append(f"{'lambda':>10}{'combined':>12}{'AutoLoss':>12}")
        combined = results["methods"]["combined"]
        autoloss = results["methods"]["AutoLoss"]
        for i, value in enumerate(results["lambdas"]):
            lines.append(
                f"{value:>10g}{combined['mean'][i]:>12.4f}"
                f"{autoloss['mean'][i]:>12.4f}"
            )
        lines.append(f"without L1: {results['without_l1']['mean']:.4f}")
    elif name == "budget":
        reach = [t["autoloss_batches_to_dgs_final"] for t in results["per_trial"]]
        dgs = [t["dgs_batches_to_final"] for t in results["per_trial"]]
        lines.append(
            "DGS final test metric per trial: " + ", ".join(
                f"{t['dgs_final']:.4f}" for t in results["per_trial"]))
        lines.append(f"DGS batches to its final: {dgs}")
        lines.append(f"AutoLoss batches to DGS's final: {reach}")
        ratio = results["batches_ratio"]
        lines.append(
            "batches ratio (median AutoLoss / DGS): "
            + ("not reached in half of the trials or more" if ratio is None
               else f"{ratio:.3f}")
        )
        reused = results["reused_controller_ratio"]
        lines.append(
            "with an already trained controller (guided run only): "
            + ("not reached in half of the trials or more" if reused is None
               else f"{reused:.3f}")
        )
    elif name == "transfer-data":
        lines.append(f"{'data set':<18}{'without_l1':>12}{'DGS':>10}"
                     f"{'AutoLoss':>10}{'DGS cost':>10}{'AL cost':>9}")
        for data_name, entry in results["data_sets"].items():
            m, cost = entry["methods"], entry["cost_batches"]
            lines.append(
                f"{data_name:<18}{m['without_l1']['mean']:>12.4f}"
                f"{m['DGS']['mean']:>10.4f}{m['AutoLoss']['mean']:>10.4f}"
                f"{cost['DGS_per_trial']:>10.0f}"
                f"{cost['AutoLoss_guided_per_trial']:>9.0f}"
            )
    else:
        lines.append(f"{'dropped':<22}{'mean':>10}{'std':>10}")
        for variant, entry in results["variants"].items():
            lines.append(f"{variant:<22}{entry['mean']:>10.4f}{entry['std']:>10.4f}")
        lines.append(f"{'DGS (reference)':<22}{results['DGS']['mean']:>10.4f}"
                     f"{results['DGS']['std']:>10.4f}")
    return "\n".join(lines)


# plot ------------------------------------------------------------------

def plot(args):
    """Write a PNG for a compare JSON file or a controller history."""
    if os.path.isdir(args.file):
        raise UsageError(
            f"FILE must be a JSON file. Received: {args.file}, a directory. "
            "Pass a JSON written by an autoloss command."
        )
    if not os.path.isfile(args.file):
        raise UsageError(f"File not found: {args.file}.")
    with open(args.file) as f:
        try:
            content = json.load(f)
        except json.JSONDecodeError as error:
            raise UsageError(f"{args.file} is not valid JSON: {error}.")
        except UnicodeDecodeError:
            raise UsageError(
                f"{args.file} is not valid JSON: it is not UTF-8 text. Pass "
                "a JSON written by an autoloss command, for example a "
                "training/search_history.json rather than its checkpoint."
            ) from None
    if not isinstance(content, dict):
        raise UsageError(
            f"{args.file} contains a JSON {type(content).__name__}, not an "
            "object, so no autoloss command wrote it. Pass a JSON written "
            "by `autoloss compare`, `study`, `transfer` or "
            "`train-controller`."
        )
    out = args.out or os.path.splitext(args.file)[0] + ".png"
    if os.path.isdir(out) or not out.lower().endswith(".png"):
        raise UsageError(
            f"--out must be a path ending in .png. Received: {out}. Pass "
            "for example --out results.png; further PNGs get its name "
            "with a suffix."
        )
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    try:
        _plot_content(content, args.file, out)
    except (KeyError, IndexError, TypeError) as error:
        raise UsageError(
            f"{args.file} is incomplete or malformed for its kind of result "
            f"({type(error).__name__}: {error}). Pass the JSON as an "
            "autoloss command wrote it."
        ) from error


def _plot_content(content, path, out):
    """Write the PNGs of a parsed result JSON and print their paths."""
    from autoloss_tf import plots

    if "transfer" in content:
        from autoloss_tf import transfer_commands

        for written in transfer_commands.plot(content, path, out):
            print(f"Plot written to {written}")
        return
    from autoloss_tf import nmt_commands

    if nmt_commands.is_nmt_result(content):
        for written in nmt_commands.plot(content, out):
            print(f"Plot written to {written}")
        return
    if _is_gan_result(content):
        from autoloss_tf import gan_commands

        for written in gan_commands.plot(content, path, out):
            print(f"Plot written to {written}")
        return
    if "study" in content:
        plots.plot_study(content, out)
    elif "methods" in content:
        plots.plot_comparison(content, out)
    elif "episodes" in content:
        plots.plot_controller_history(content, out)
    else:
        raise UsageError(
            f"{path} is not a compare result (no 'methods' key), a "
            "study result (no 'study' key) or a controller history (no "
            "'episodes' or 'history' key). Pass a JSON written by `autoloss compare`, "
            "`autoloss study` or `autoloss train-controller`."
        )
    print(f"Plot written to {out}")


def _is_gan_result(content):
    """Return True for a GAN compare JSON or a GAN controller history
    (online or search)."""
    if not isinstance(content, dict):
        return False
    if content.get("task") == "gan" and "methods" in content:
        return True
    if content.get("estimator") == "search" and "history" in content:
        return True
    return "history" in content and "runs" in content


def select_methods(requested, available, without_controller=None):
    """Return the methods of `available` named in `requested`, in order.

    Args:
        requested: the `--methods` names, or None for all of `available`.
        available: the methods the comparison can run.
        without_controller: a method name that needs `--controller`, given
            when no controller was passed, for a clearer error.

    Raises:
        UsageError: for a name that is not available or a repeated name.
    """
    if requested is None:
        return list(available)
    for name in requested:
        if name == without_controller:
            raise UsageError(
                f"--methods {name} needs a trained controller. Received no "
                "--controller. Pass --controller DIR, or leave it out of "
                "--methods."
            )
        if name not in available:
            raise UsageError(
                f"--methods must name methods of this comparison: "
                f"{', '.join(available)}. Received: {name!r}. Pass some of "
                "those names."
            )
    if len(set(requested)) != len(requested):
        raise UsageError(
            f"--methods names each method once. Received: "
            f"{' '.join(requested)}. Remove the repeated names."
        )
    return [name for name in available if name in requested]


def misplaced_options_error(names, scope, received):
    """Return the `UsageError` for options given where they are not read.

    Args:
        names: argparse dests of the misplaced options.
        scope: where the options apply, for example "the nmt task".
        received: where they were given, for example "with task gan".
    """
    flags = ", ".join("--" + name.replace("_", "-") for name in names)
    verb, pronoun = ("applies", "it") if len(names) == 1 else ("apply", "them")
    return UsageError(
        f"{flags} {verb} to {scope} only. Received {pronoun} {received}. "
        f"Remove {pronoun}."
    )


# Options that only the L1 tasks (regression, classification) read.
L1_ONLY_OPTIONS = ("episodes", "episodes_per_batch", "learning_rate",
                   "data_sets", "baseline", "controller_kind", "dataset")
# Options of `train-controller` that only the gan task reads.
GAN_SEARCH_OPTIONS = ("estimator", "pairs", "workers", "start_controller",
                      "bias_sigma", "weight_sigma")


def reject_options(task, explicit, names, scope):
    """Raise `misplaced_options_error` for the `names` given in `explicit`.

    Args:
        task: the task argument, for the message.
        explicit: argparse dests of the options given explicitly.
        names: dests of the options that `task` does not read.
        scope: where those options apply, for example "the nmt task".
    """
    wrong = [name for name in names if name in explicit]
    if wrong:
        raise misplaced_options_error(wrong, scope, f"with task {task}")
