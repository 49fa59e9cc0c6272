"""The `autoloss` sub-commands for multi-task NMT (`nmt`).

`cli.py` parses the arguments and sends a command whose task is `nmt`
here. The experiments themselves live in `autoloss_models.nmt_experiments`.
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
from autoloss_tf.commands import reject_options
from autoloss_tf.commands import resume_online_trainer
from autoloss_tf.commands import select_methods
from autoloss_tf.commands import write_json

TASK = "nmt"
DEFAULT_RUNS = 1
DEFAULT_TRIALS = 3
# Options that only the L1 tasks read, and those that only nmt reads.
NMT_ONLY_OPTIONS = ("budget_seconds", "clock")


def _experiments():
    # Imported here so `autoloss --help` does not load TensorFlow.
    from autoloss_models import nmt_experiments

    return nmt_experiments


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
        reject_options(task, explicit, GAN_SEARCH_OPTIONS, "the gan task")
    else:
        reject_options(task, explicit, NMT_ONLY_OPTIONS, "the nmt task")


def nmt_settings(args):
    """Return the `NmtSettings` of `--mode` with the budget options applied."""
    experiments = _experiments()
    mode = args.mode or "quick"
    overrides = {}
    budget = getattr(args, "budget_seconds", None)
    if budget is not None:
        if not budget > 0:
            raise UsageError(
                "--budget-seconds sets the counted seconds per NMT run and "
                f"must be > 0. Received: --budget-seconds {budget}."
            )
        overrides["budget_seconds"] = float(budget)
    max_steps = getattr(args, "max_steps", None)
    if max_steps is not None:
        if max_steps < 1:
            raise UsageError(
                "--max-steps for nmt limits the steps per run and must be "
                f">= 1. Received: --max-steps {max_steps}."
            )
        overrides["max_steps"] = int(max_steps)
    clock = getattr(args, "clock", None)
    if clock is not None:
        overrides["clock"] = clock
    return experiments.settings_for(mode, **overrides)


def load_corpus(settings):
    """Load the NMT corpus of `settings`, printing what the loader reports."""
    return _experiments().load_corpus(
        settings, progress=lambda message: print(message, flush=True)
    )


def load_nmt_controller(directory):
    """Load an exported controller and check that it was trained for nmt."""
    experiments = _experiments()
    return load_controller_for_task(
        directory, TASK, experiments.FEATURE_NAMES, experiments.ACTION_NAMES
    )


def _load_average():
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


class _BudgetBar:
    """A tqdm bar over the counted seconds of a sequence of runs.

    `show(run)` moves it to the finished runs' budgets plus the seconds of
    `run`. A run object that it has not seen before marks the previous run
    as finished.
    """

    def __init__(self, runs, budget_seconds, description, finished_runs=0):
        self.budget_seconds = float(budget_seconds)
        self.finished_runs = int(finished_runs)
        self.run = None
        self.bar = tqdm(total=round(runs * self.budget_seconds, 1), unit="s",
                        desc=description,
                        bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s "
                                   "[{elapsed}<{remaining}{postfix}]")
        self.bar.update(self.finished_runs * self.budget_seconds)

    def show(self, run, **postfix):
        if self.run is not None and run is not self.run:
            self.finished_runs += 1
        self.run = run
        position = (self.finished_runs * self.budget_seconds
                    + min(run.seconds, self.budget_seconds))
        self.bar.update(max(position - self.bar.n, 0.0))
        self.bar.set_postfix(step=run.step, ppl=f"{run.curve[-1][3]:.1f}",
                             **postfix)

    def close(self):
        self.bar.close()


# train-controller ---------------------------------------------------------

def train_controller(args, command):
    """Train the NMT controller online over `--runs` runs; export it."""
    experiments = _experiments()
    settings = nmt_settings(args)
    runs = DEFAULT_RUNS if args.runs is None else args.runs
    state_dir = os.path.join(args.out, "training")
    check_online_training_target(
        args, runs, os.path.join(state_dir, experiments.CHECKPOINT_FILE)
    )

    experiments.set_seeds(args.seed)
    corpus = load_corpus(settings)
    trainer = experiments.OnlineControllerTrainer(
        settings, corpus, state_dir, seed=args.seed
    )
    if args.resume:
        resume_online_trainer(
            trainer, args,
            "--mode, --budget-seconds, --max-steps, --clock and --seed",
        )
    _train_with_progress(trainer, runs, settings)

    info = _export(trainer, args, command, runs)
    print(
        f"Trained {info['runs']} NMT run(s) ({info['segments']} segments, "
        f"{info['ppo_updates']} PPO updates). Final validation perplexity "
        f"of the last run: {info['final_perplexity']:.2f}. Controller "
        f"written to {args.out}"
    )
    return info


def _train_with_progress(trainer, runs, settings):
    bar = _BudgetBar(runs, settings.budget_seconds, "controller",
                     finished_runs=min(len(trainer.runs), runs))

    def report(entry, run):
        bar.show(run, p_mt=f"{entry['probabilities'][0]:.2f}")

    try:
        trainer.train(runs, progress=report)
    finally:
        bar.close()


def _export(trainer, args, command, runs):
    experiments = _experiments()
    history = trainer.history
    last_run = trainer.runs[-1] if trainer.runs else None
    ppo_updates = trainer.updater.updates
    info = {
        "task": TASK, "command": command, "seed": args.seed,
        "mode": trainer.settings.mode, "settings": trainer.settings.to_dict(),
        "runs": len(trainer.runs), "requested_runs": runs,
        "segments": len(history), "ppo_updates": int(ppo_updates),
        "final_perplexity": (None if last_run is None
                             else last_run["final"]),
        "final_perplexity_note": (
            "validation perplexity of the translation task at the end of "
            "the last controller-training run"
        ),
        "task_model_steps": int(sum(run["steps"] for run in trainer.runs)),
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
    """Train one new NMT model under a trained controller; print it."""
    experiments = _experiments()
    if args.controller is None:
        raise UsageError(
            "guide nmt needs --controller DIR: the shipped "
            "saved_controllers/nmt, or one trained with "
            "`autoloss train-controller nmt --out DIR`."
        )
    settings = nmt_settings(args)
    loaded = load_nmt_controller(args.controller)

    experiments.set_seeds(args.seed)
    corpus = load_corpus(settings)
    bar = _BudgetBar(1, settings.budget_seconds, "guided nmt")
    try:
        result = experiments.guided_run(
            settings, corpus, loaded.controller, args.seed,
            decoding=args.decoding, progress=bar.show,
        )
    finally:
        bar.close()

    mean = np.mean([point[1:] for point in result["probabilities"]], axis=0)
    shares = ", ".join(f"{name} {value:.2f}" for name, value in
                       zip(experiments.ACTION_NAMES, mean))
    print(
        f"nmt guided by {args.controller} (seed {args.seed}, "
        f"{settings.mode} mode): validation perplexity "
        f"{result['final']:.2f}, test perplexity "
        f"{result['test_perplexity']:.2f}, test BLEU "
        f"{100 * result['bleu']:.2f}, {result['steps']} steps "
        f"({result['mt_steps']} translation steps) in "
        f"{result['seconds']:.0f} counted seconds; mean task "
        f"probabilities: {shares}"
    )
    return result


# compare ------------------------------------------------------------------

def compare(args, command):
    """Run MT, FixedRatio, FineTunedMT and AutoLoss; print and save them."""
    experiments = _experiments()
    settings = nmt_settings(args)
    trials = DEFAULT_TRIALS if args.trials is None else args.trials
    if trials < 1:
        raise UsageError(f"--trials must be >= 1. Received: {trials}.")
    check_json_target(args.json)
    loaded = None
    if args.controller is not None:
        loaded = load_nmt_controller(args.controller)
    methods = select_methods(args.methods, experiments.METHODS)

    experiments.set_seeds(args.seed)
    corpus = load_corpus(settings)
    print(f"nmt {settings.mode} mode: methods {', '.join(methods)}; "
          f"{trials} trial{'s' if trials != 1 else ''} of "
          f"{settings.budget_seconds:.0f} counted "
          f"{settings.clock}-clock seconds each")
    load_before = _load_average()
    started = time.time()
    bar = _BudgetBar(len(methods) * trials, settings.budget_seconds,
                     "compare nmt")

    def report(method, trial, run):
        bar.show(run, method=method)

    try:
        methods_results = experiments.run_comparison(
            settings, corpus, trials, seed=args.seed,
            controller=None if loaded is None else loaded.controller,
            methods=methods, progress=report,
        )
    finally:
        bar.close()
    results = summarize(methods_results, settings, corpus, args, command,
                        loaded, trials, time.time() - started,
                        [load_before, _load_average()])
    print(format_table(results))
    if args.json:
        write_json(args.json, results)
        print(f"Results written to {args.json}")
    return results


def summarize(methods_results, settings, corpus, args, command, loaded,
              trials, elapsed, load_averages):
    """Return the results dictionary written by `compare nmt --json`."""
    experiments = _experiments()
    methods = {}
    for name, entry in methods_results.items():
        runs = entry["runs"]
        stats = experiments.summarize_runs(runs)
        methods[name] = dict(stats["perplexity"])
        for key in ("test_perplexity", "bleu", "steps", "mt_steps",
                    "seconds"):
            methods[name][key] = stats[key]
        methods[name]["curves"] = [run["curve"] for run in runs]
        if name == experiments.AUTOLOSS:
            methods[name]["feature_curves"] = [run["feature_curve"]
                                               for run in runs]
        methods[name]["probabilities"] = [run["probabilities"]
                                          for run in runs]
        methods[name]["examples"] = runs[0]["examples"]
        if "controller_history" in runs[0]:
            methods[name]["controller_history"] = [
                run["controller_history"] for run in runs
            ]
    probabilities = experiments.fixed_ratio_probabilities(settings, corpus)
    return {
        "task": TASK,
        "metric": "perplexity",
        "higher_is_better": False,
        "trials": trials,
        "seed": args.seed,
        "command": command,
        "mode": settings.mode,
        "settings": settings.to_dict(),
        "final_metric_note": (
            "validation perplexity of the translation task (exp of the mean "
            "token cross-entropy over all non-padding target tokens) at the "
            f"end of a budget of {settings.budget_seconds:.0f} counted "
            f"{settings.clock}-clock seconds; test_perplexity and bleu "
            "(corpus BLEU of greedy translations, 0 to 1) are on the test "
            "split"
        ),
        "budget_note": (
            "AutoLoss's budget counts its controller forward passes, its "
            "PPO updates and the evaluation after every segment of the "
            "validation sentences behind its rewards and features "
            f"({_feature_sentences(settings, corpus)}). The curves read "
            f"{_valid_count(settings, corpus)} validation sentences; "
            "that evaluation is not counted, except where it is the same "
            "as the feature evaluation"
        ),
        "fixed_ratio_probabilities": dict(zip(experiments.ACTION_NAMES,
                                              probabilities)),
        "controller": args.controller,
        "controller_training": (
            {} if loaded is None else loaded.metadata.get("training", {})
        ),
        "machine": machine_description(),
        "load_averages": load_averages,
        "elapsed_seconds": round(elapsed, 1),
        "methods": methods,
    }


def _valid_count(settings, corpus):
    return _experiments().validation_counts(
        settings, len(corpus.valid.source))[0]


def _feature_sentences(settings, corpus):
    """Describe which validation sentences the feature evaluation reads."""
    valid, feature = _experiments().validation_counts(
        settings, len(corpus.valid.source))
    if feature >= valid:
        return f"all {valid} of the curves"
    return f"the first {feature}"


def format_table(results):
    """Return a text table of the final metrics per method."""
    lines = [
        f"nmt ({results['mode']} mode), {results['trials']} trials, seed "
        f"{results['seed']}; perplexity: lower is better",
        f"{'method':<13}{'valid PPL':>16}{'test PPL':>10}{'BLEU':>8}"
        f"{'steps':>9}{'MT steps':>10}",
    ]
    for method, entry in results["methods"].items():
        lines.append(
            f"{method:<13}{entry['mean']:>9.2f} +-{entry['std']:>5.2f}"
            f"{entry['test_perplexity']['mean']:>10.2f}"
            f"{100 * entry['bleu']['mean']:>8.2f}"
            f"{entry['steps']['mean']:>9.0f}"
            f"{entry['mt_steps']['mean']:>10.0f}"
        )
    return "\n".join(lines)


# plot ---------------------------------------------------------------------

def is_nmt_result(content):
    """Return True for an NMT compare JSON or NMT controller history."""
    return isinstance(content, dict) and content.get("task") == TASK


def plot(content, out):
    """Write the PNGs of an NMT compare JSON or controller history.

    Returns:
        The list of PNG paths written.
    """
    from autoloss_tf import plots

    if "methods" in content:
        stem = os.path.splitext(out)[0]
        written = [out, stem + "_probabilities.png"]
        plots.plot_nmt_curves(content, written[0])
        plots.plot_nmt_probabilities(content, written[1])
        return written
    if "history" not in content:
        raise UsageError(
            "An nmt JSON must be a `compare nmt` result (with 'methods') or "
            "a controller-training history (with 'history')."
        )
    plots.plot_nmt_controller_history(content, out)
    return [out]
