"""The `autoloss` command: train, guide, compare and plot.

Examples:

    autoloss compare regression
    autoloss train-controller classification --episodes 300 --seed 0 --out runs/c
    autoloss guide regression --controller saved_controllers/regression --seed 3
    autoloss study budget regression --trials 10 --json budget.json
    autoloss plot benchmarks/results/regression.json
    autoloss train-controller gan --out runs/gan --runs 5
    autoloss compare gan --trials 3 --controller runs/gan --json gan.json
    autoloss transfer gan-architectures --n 20 --json architectures.json
    autoloss transfer gan-data --dataset fashion_mnist --json fashion.json
    autoloss compare nmt --trials 3 --json nmt.json
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

DEFAULT_CONTROLLERS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "saved_controllers",
)
L1_TASKS = ("regression", "classification")
GAN_TASK = "gan"
NMT_TASK = "nmt"
TASKS = L1_TASKS + (GAN_TASK, NMT_TASK)
# Sub-commands whose first argument is a task of TASKS.
TASK_COMMANDS = ("train-controller", "guide", "compare")
L1_COMPARE_TRIALS, GAN_COMPARE_TRIALS = 10, 3
STUDIES = ("lambda-robustness", "budget", "transfer-data", "ablation")
TRANSFERS = ("gan-architectures", "gan-data")


def build_parser():
    """Return the argument parser of the `autoloss` command."""
    parser = argparse.ArgumentParser(
        prog="autoloss",
        description="Learn and use training schedules (AutoLoss) for Keras.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser(
        "train-controller",
        help="train a controller by REINFORCE on the controller partitions",
    )
    _add_task_arguments(train, seed_help="seed of the data, weights and "
                        "sampling (default 0)")
    train.add_argument("--episodes", type=int, default=400,
                       help="total task-model training episodes (default 400)")
    train.add_argument("--out", required=True,
                       help="directory for checkpoints and the exported controller")
    train.add_argument("--resume", action="store_true",
                       help="continue from the checkpoint in --out")
    train.add_argument("--episodes-per-batch", type=int, default=16,
                       help="episodes trained side by side in one population "
                            "run (default 16)")
    train.add_argument("--learning-rate", type=float, default=None,
                       help="controller Adam learning rate (default: 3e-3 for "
                            "regression, 1e-3 for classification)")
    train.add_argument("--data-sets", type=int, default=None,
                       help="synthetic data sets whose controller partitions "
                            "the episodes cycle through (default 8; always 1 "
                            "for breast_cancer)")
    train.add_argument("--baseline", default="batch",
                       choices=("batch", "moving_average"),
                       help="REINFORCE baseline: the mean reward of the other "
                            "episodes of a batch, which start from the same "
                            "weights (default), or the moving average of "
                            "rewards")
    train.add_argument("--controller-kind", default="mlp",
                       choices=("mlp", "linear"),
                       help="controller network (default mlp)")
    train.add_argument("--runs", type=int, default=None,
                       help="gan and nmt: total task-model runs the "
                            "controller trains along with, counting resumed "
                            "ones (default 5 for gan, 1 for nmt; 36 for gan "
                            "with --estimator search)")
    train.add_argument("--estimator", default="online",
                       choices=("online", "search"),
                       help="gan: how the controller learns. online: one "
                            "REINFORCE update per segment of a run, rewarded "
                            "by the segment's IS gain, as in the paper "
                            "(default). search: antithetic pairs of whole "
                            "runs under perturbed controllers, rewarded by "
                            "each run's final IS")
    train.add_argument("--pairs", type=int, default=None,
                       help="gan with --estimator search: antithetic pairs "
                            "per generation (default 3); --runs must be a "
                            "multiple of twice this")
    train.add_argument("--bias-sigma", type=float, default=None,
                       help="gan with --estimator search: noise scale of "
                            "the bias of the controller's logit difference "
                            "(default 0.4)")
    train.add_argument("--weight-sigma", type=float, default=None,
                       help="gan with --estimator search: noise scale of "
                            "each feature weight (default 0.15; 0 searches "
                            "the bias only)")
    train.add_argument("--workers", type=int, default=1,
                       help="gan with --estimator search: processes that "
                            "train runs side by side, one TensorFlow thread "
                            "each (default 1)")
    train.add_argument("--start-controller", default=None,
                       help="gan with --estimator search: exported "
                            "controller to start from, for example "
                            "saved_controllers/gan_mnist (default: uniform)")

    guide = commands.add_parser(
        "guide", help="train one new task model on fresh data under a controller"
    )
    _add_task_arguments(guide, seed_help="seed of the fresh data and of "
                        "sampled actions (default 0)")
    _add_controller_argument(guide)
    _add_decoding_argument(guide)

    compare = commands.add_parser(
        "compare",
        help="run a task's baselines and AutoLoss: w/o L1, S1-S3 and DGS "
             "(Table 1), fixed D:G ratios (gan), or MT, FixedRatio and "
             "FineTunedMT (nmt)",
    )
    _add_task_arguments(compare, seed_help="seed of the trial data sets "
                        "(default 0)")
    _add_controller_argument(compare)
    compare.add_argument("--trials", type=int, default=None,
                         help="fresh data sets, or runs per method for gan "
                              f"and nmt (default {L1_COMPARE_TRIALS}, "
                              f"{GAN_COMPARE_TRIALS} for gan and nmt)")
    compare.add_argument("--methods", nargs="+", default=None,
                         metavar="METHOD",
                         help="gan and nmt: run only these methods, in "
                              "the comparison's own order, for example "
                              "--methods 1:1 AutoLoss (default: all; gan's "
                              "updates to reach 1:1's final IS need 1:1)")
    compare.add_argument("--json", default=None,
                         help="write results to this JSON file")
    compare.add_argument("--workers", type=int, default=1,
                         help="gan: processes that train runs side by side, "
                              "one TensorFlow thread each (default 1)")
    _add_decoding_argument(compare, "gan: how AutoLoss runs take actions "
                           "from the controller: ")

    study = commands.add_parser(
        "study",
        help="run one of the paper's further L1 studies (Figure 1, Figure 3 "
             "right, Table 2, Table 3)",
    )
    study.add_argument("name", choices=STUDIES,
                       help="lambda-robustness (regression, classification), "
                            "budget (regression), transfer-data "
                            "(classification), ablation (regression)")
    study.add_argument("task", choices=L1_TASKS,
                       help="the L1 task the study runs on")
    study.add_argument("--trials", type=int, default=10,
                       help="fresh comparison data sets (default 10)")
    study.add_argument("--seed", type=int, default=0,
                       help="seed of controllers and trial data (default 0)")
    study.add_argument("--episodes", type=int, default=None,
                       help="episodes per controller, at least 2 (default "
                            "320 for regression, 400 for classification)")
    study.add_argument("--json", default=None,
                       help="write results to this JSON file")
    study.add_argument("--work-dir", default=None,
                       help="where controller checkpoints go; a rerun with "
                            "the same settings resumes them (default "
                            "runs/study/NAME-TASK-seedS)")
    study.add_argument("--lambdas", type=float, nargs="+", default=None,
                       help="L1 weights of lambda-robustness (default "
                            "0.01 0.1 1 10 for regression, 1e-4 to 1 for "
                            "classification)")
    study.add_argument("--controller", default=None,
                       help="transfer-data: use this exported classification "
                            "controller instead of training one")
    study.add_argument("--max-steps", type=int, default=None,
                       help="step limit of each task-model run, in "
                            "controller training and in the trials (default: "
                            "the task's, 20000 for regression, 2000 for "
                            "classification)")
    study.set_defaults(dataset="synthetic")

    transfer = commands.add_parser(
        "transfer",
        help="guide GANs of sampled architectures (Figure 4, left) or on "
             "another data set with a trained MNIST GAN controller",
    )
    _add_transfer_arguments(transfer)

    plot = commands.add_parser("plot", help="draw PNG plots of a results file")
    plot.add_argument("file", help="a compare or study JSON, or a controller "
                                   "history.json")
    parser.subcommands = {
        "train-controller": train, "guide": guide, "compare": compare,
        "study": study, "transfer": transfer, "plot": plot,
    }
    plot.add_argument("--out", default=None,
                      help="PNG path (default: FILE with .png)")
    return parser


def _add_task_arguments(parser, seed_help):
    parser.add_argument("task", choices=TASKS)
    parser.add_argument("--seed", type=int, default=0, help=seed_help)
    parser.add_argument("--dataset", default="synthetic",
                        choices=("synthetic", "breast_cancer"),
                        help="classification data set (default synthetic)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="step limit of each task-model run (default: "
                             "the task's, 20000 for regression, 2000 for "
                             "classification); for gan, the updates per GAN "
                             "run, a multiple of the segment length "
                             "(default 3000 quick, 20000 full); for nmt, a "
                             "step limit on top of the time budget (default "
                             "none)")
    parser.add_argument("--mode", default=None, choices=("quick", "full"),
                        help="gan and nmt: quick (small settings for CPUs: "
                             "for gan 3000 updates with kernel 3, for nmt "
                             "360 s runs of a 1-layer model) or full (the "
                             "paper's settings, for a GPU) (default quick)")
    parser.add_argument("--budget-seconds", type=float, default=None,
                        help="nmt only: counted seconds per run (default "
                             "360 quick, 3600 full)")
    parser.add_argument("--clock", default=None, choices=("wall", "process"),
                        help="nmt only: what the budget counts, wall-clock "
                             "time or this process's CPU time (default "
                             "wall)")


def _add_transfer_arguments(parser):
    parser.add_argument(
        "name", choices=TRANSFERS,
        help="gan-architectures: sampled DCGAN architectures, each trained "
             "with the controller and without it (D:G 1:1); gan-data: the "
             "default DCGAN on another data set against the fixed D:G "
             "ratios of `compare gan`",
    )
    parser.add_argument("--n", type=int, default=None,
                        help="gan-architectures: architectures to sample, "
                             "1 to 24 (default 20)")
    parser.add_argument("--dataset", default=None,
                        help="gan-data: data set of the GANs (default "
                             "fashion_mnist, the only one with a shipped IS "
                             "classifier besides MNIST)")
    parser.add_argument("--trials", type=int, default=None,
                        help="gan-data: GAN runs per method (default 3)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the architecture sampling and of the "
                             "first GAN; GAN i uses seed + i (default 0)")
    parser.add_argument("--mode", default=None, choices=("quick", "full"),
                        help="quick (3x3 kernels, batch 64, for CPUs) or full "
                             "(the paper's settings, for a GPU) (default "
                             "quick)")
    parser.add_argument("--controller", default=None,
                        help="exported GAN controller directory (default: "
                             "the shipped saved_controllers/gan_mnist)")
    parser.add_argument("--updates", type=int, default=None,
                        help="updates (D + G) per GAN run, a multiple of the "
                             "segment length (default: 800 quick for "
                             "gan-architectures, 3000 quick for gan-data, "
                             "20000 full)")
    parser.add_argument("--json", default=None,
                        help="write results to this JSON file")
    parser.add_argument("--work-dir", default=None,
                        help="gan-architectures: where the checkpoint goes; "
                             "a rerun with the same settings resumes it "
                             "(default runs/transfer/gan-architectures-"
                             "MODE-seedS)")
    parser.add_argument("--fail-below", type=float, default=None,
                        help="gan-architectures: also summarize without the "
                             "architectures where both runs end below this "
                             "IS (the paper used 6)")


def _add_decoding_argument(parser, prefix="how actions follow from the "
                           "controller's policy: "):
    # The choices of schedules.DECODINGS, written out because importing
    # that module loads TensorFlow, which `autoloss --help` avoids.
    parser.add_argument("--decoding", default="sample",
                        choices=("sample", "greedy", "dither"),
                        help=prefix + "sample draws each one, greedy takes "
                             "the most probable, dither takes each at the "
                             "policy's rate without random draws (default "
                             "sample)")
    # The flag that --decoding replaced, kept only to name its successor.
    parser.add_argument("--greedy", action="store_true",
                        help=argparse.SUPPRESS)


def _add_controller_argument(parser):
    parser.add_argument("--controller", default=None,
                        help="exported controller directory (default: the "
                             "shipped one for the L1 tasks; guide gan and "
                             "guide nmt need it, for example "
                             "saved_controllers/gan_mnist or "
                             "saved_controllers/nmt; compare gan without it "
                             "runs the fixed ratios only; for compare nmt, "
                             "the weights that every online AutoLoss run "
                             "starts from)")


def main(argv=None):
    """Run the `autoloss` command; return its exit status."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    command = "autoloss " + " ".join(argv)
    from autoloss_tf import commands
    from autoloss_tf import gan_commands
    from autoloss_tf import nmt_commands

    task = getattr(args, "task", None) if args.command in TASK_COMMANDS else None
    if args.command == "compare" and args.trials is None:
        args.trials = (
            GAN_COMPARE_TRIALS if task in (GAN_TASK, NMT_TASK)
            else L1_COMPARE_TRIALS
        )
    try:
        if task is not None:
            explicit = _explicit_options(parser, args)
            nmt_commands.check_options(task, explicit)
            if task != NMT_TASK:
                gan_commands.check_options(task, explicit)
            if "greedy" in explicit:
                raise commands.UsageError(
                    "--greedy was replaced by --decoding. Pass --decoding "
                    "greedy instead."
                )
            if args.command == "compare" and task != GAN_TASK:
                commands.reject_options(task, explicit, ("decoding",),
                                        "compare with the gan task")
        if task == GAN_TASK:
            _run_task_command(args, command, gan_commands)
        elif task == NMT_TASK:
            _run_task_command(args, command, nmt_commands)
        elif args.command == "train-controller":
            commands.train_controller(args, command)
        elif args.command == "guide":
            commands.guide(args)
        elif args.command == "compare":
            commands.compare(args, command)
        elif args.command == "study":
            commands.study(args, command)
        elif args.command == "transfer":
            from autoloss_tf import transfer_commands

            transfer_commands.run(args, command)
        elif args.command == "plot":
            commands.plot(args)
    except commands.COMMAND_ERRORS as error:
        print(f"autoloss: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "\nautoloss: interrupted. Controller training, studies and "
            "transfer gan-architectures keep their last checkpoint: rerun "
            "the same command to resume (train-controller needs --resume).",
            file=sys.stderr,
        )
        return 130
    return 0


def _explicit_options(parser, args):
    """Return the option names whose values differ from their defaults."""
    subparser = parser.subcommands[args.command]
    return {
        name for name, value in vars(args).items()
        if name not in ("command", "task")
        and value != subparser.get_default(name)
    }


def _run_task_command(args, command, task_commands):
    if args.command == "train-controller":
        task_commands.train_controller(args, command)
    elif args.command == "guide":
        task_commands.guide(args)
    else:
        task_commands.compare(args, command)


if __name__ == "__main__":
    sys.exit(main())
