"""Command line: `python -m deeplab_kit <command> ...` (run with --help for the commands).

Each command is a small `_add_<command>` function that declares its arguments and the library
call it makes; the logic lives in the library modules.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deeplab_kit",
        description="DeepLabv3 on PASCAL VOC 2012: data, training in sessions, evaluation, demo.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (
        _add_demo,
        _add_synth,
        _add_download,
        _add_train,
        _add_evaluate,
        _add_ablation,
        _add_results,
    ):
        add(commands)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        # Bad input: one clear line naming the file and the problem, no traceback.
        print(f"error: {error}", file=sys.stderr)
        return 2


# --- demo ----------------------------------------------------------------------------------


def _add_demo(commands) -> None:
    from deeplab_kit.config import add_arguments

    parser = commands.add_parser(
        "demo",
        help="the whole pipeline on a generated dataset, on a CPU, in minutes",
        description="Generate the synthetic VOC-format dataset if absent, train the demo recipe, "
        "evaluate, and write the run folder: metrics.json, history.csv, metrics.md/.csv, "
        "loss_curve.png, predictions.png. Run again with the same --out to resume.",
    )
    parser.add_argument("--out", default="runs/demo", help="run folder (default: runs/demo)")
    parser.add_argument(
        "--data",
        dest="data_root",
        default="data/synthetic",
        help="synthetic dataset folder, made if absent (default: data/synthetic)",
    )
    parser.add_argument("--train", type=int, dest="num_train", help="training images to generate")
    parser.add_argument("--val", type=int, dest="num_val", help="validation images to generate")
    parser.add_argument("--size", type=int, help="generated image size in pixels")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_arguments(parser, exclude=("data_root",))

    def run(args) -> int:
        from deeplab_kit.config import RunConfig, overrides_from_arguments
        from deeplab_kit.demo import run_demo

        config = RunConfig.from_recipe("demo", **overrides_from_arguments(args))
        data = {
            k: getattr(args, k)
            for k in ("num_train", "num_val", "size")
            if getattr(args, k) is not None
        }
        run_demo(args.out, args.data_root, config=config, data=data, progress=not args.quiet)
        return 0

    parser.set_defaults(run=run)


# --- synth ---------------------------------------------------------------------------------


def _add_synth(commands) -> None:
    parser = commands.add_parser(
        "synth",
        help="generate the synthetic VOC-format dataset",
        description="Write a synthetic PASCAL VOC 2012 tree (JPEG images, palette PNG masks, "
        "split files) under ROOT/VOCdevkit/VOC2012. Same arguments, same bytes; an identical "
        "dataset already there is kept.",
    )
    parser.add_argument("--out", required=True, metavar="ROOT", help="folder to write into")
    parser.add_argument("--train", type=int, default=200, metavar="N", help="training images")
    parser.add_argument("--val", type=int, default=50, metavar="M", help="validation images")
    parser.add_argument("--size", type=int, default=128, metavar="S", help="image side, pixels")
    parser.add_argument("--seed", type=int, default=0, metavar="K", help="random seed")

    def run(args) -> None:
        from deeplab_kit.synthetic import make_synthetic_voc

        root = make_synthetic_voc(args.out, args.train, args.val, args.size, args.seed)
        print(
            f"synthetic VOC ({args.train} train, {args.val} val, {args.size}x{args.size}, "
            f"seed {args.seed}) in {root / 'VOCdevkit' / 'VOC2012'}"
        )

    parser.set_defaults(run=run)


# --- download ------------------------------------------------------------------------------


def _add_download(commands) -> None:
    parser = commands.add_parser(
        "download",
        help="download PASCAL VOC 2012 or SBD (checksums verified by torchvision)",
        description="Download and extract PASCAL VOC 2012 (voc) or SBD (sbd, for the 'trainaug' "
        "split) into ROOT. If the host cannot be reached, the message says where else to get "
        "the archive and where to put it; see data/README.md.",
    )
    parser.add_argument("dataset", choices=("voc", "sbd"))
    parser.add_argument("--root", default="data", help="folder to download into (default: data)")

    def run(args) -> None:
        from deeplab_kit.download import download

        print(f"{args.dataset}: ready in {download(args.dataset, args.root)}")

    parser.set_defaults(run=run)


# --- train ---------------------------------------------------------------------------------


def _add_train(commands) -> None:
    from deeplab_kit.config import RECIPES, add_arguments

    parser = commands.add_parser(
        "train",
        help="train or resume a run (also under torchrun)",
        description="Train the run in --out until --epochs, in sessions: --session-epochs K or "
        "--session-minutes M end a session with a checkpoint; the same command again resumes "
        "from the newest checkpoint that loads. Every run-configuration field is an option.",
    )
    parser.add_argument(
        "--out", required=True, help="run folder: checkpoints/, history.csv, metrics.json"
    )
    parser.add_argument(
        "--recipe",
        default="report",
        choices=sorted(RECIPES),
        help="starting values (default: report)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_arguments(parser)

    def run(args) -> int:
        from deeplab_kit.config import RunConfig, overrides_from_arguments
        from deeplab_kit.engine import train

        config = RunConfig.from_recipe(args.recipe, **overrides_from_arguments(args))
        train(config, args.out, progress=not args.quiet)
        return 0  # also when the session ended before the last epoch: a clean stop

    parser.set_defaults(run=run)


# --- evaluate ------------------------------------------------------------------------------


def _add_evaluate(commands) -> None:
    from deeplab_kit.config import parse_value

    parser = commands.add_parser(
        "evaluate",
        help="score a checkpoint on a split",
        description="Score a saved model (a .pt file, or a run folder: its newest checkpoint) "
        "on a split, preprocessed as its run's validation was.",
    )
    parser.add_argument("--data", required=True, help="folder holding VOCdevkit/VOC2012")
    parser.add_argument("--checkpoint", required=True, help="a checkpoint file or a run folder")
    parser.add_argument("--out", help="write metrics.json and the metrics tables here")
    parser.add_argument("--split", default="val", help="split to score (default: val)")
    parser.add_argument(
        "--scales",
        type=lambda text: parse_value("eval_scales", text),
        default=(1.0,),
        metavar="X,X,...",
        help="input scales whose scores are averaged, e.g. 0.75,1,1.25",
    )
    parser.add_argument(
        "--flip", action="store_true", help="also average horizontally flipped inputs"
    )
    parser.add_argument("--batch-size", type=int, help="default: the run's")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", default="auto", choices=("auto", "bf16", "fp16", "off"))
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")

    def run(args) -> int:
        from deeplab_kit.engine import evaluate_checkpoint
        from deeplab_kit.metrics import report_table
        from deeplab_kit.runs import markdown_table

        metrics = evaluate_checkpoint(
            args.checkpoint, args.data, split=args.split, scales=args.scales, flip=args.flip,
            batch_size=args.batch_size, device=args.device, amp=args.amp,
            num_workers=args.num_workers, out_dir=args.out, progress=not args.quiet,
        )  # fmt: skip
        print(markdown_table(report_table({"model": metrics})), end="")
        return 0

    parser.set_defaults(run=run)


# --- ablation ------------------------------------------------------------------------------


def _add_ablation(commands) -> None:
    from deeplab_kit.config import RECIPES, add_arguments

    parser = commands.add_parser(
        "ablation",
        help="train one model per set of ASPP rates and seed, and tabulate mIoU",
        description="The atrous-rate ablation of notebook 02: the recipe's model trained once per "
        "setting and seed (1x1 only (), no atrous (1,1,1), fitted to 16x16 (3,6,9), paper "
        "(6,12,18), report (8,12,16), report variant (12,16,24), OS8 rates (12,24,36)), one run "
        "folder each under --out, and the table in --out/ablation.csv and ablation.json. A "
        "setting that builds the same network as an earlier one at this geometry is not trained "
        "twice. Run again with the same --out to resume. The stored ablation is made by "
        "`python -m deeplab_kit results make ablation`.",
    )
    parser.add_argument("--out", required=True, help="folder for the runs and the table")
    parser.add_argument(
        "--recipe", default="ablation", choices=sorted(RECIPES),
        help="starting values (default: ablation)",
    )  # fmt: skip
    parser.add_argument("--only", nargs="+", metavar="LABEL", help="run only these of the settings")
    parser.add_argument(
        "--add",
        nargs="+",
        default=[],
        metavar="LABEL=R,R,R",
        help='more settings, e.g. --add "fitted=1,2,3"',
    )
    parser.add_argument(
        "--seeds",
        default="0",
        metavar="K,K,...",
        help="seeds to run each setting with (default: 0)",
    )
    parser.add_argument(
        "--erf-images", type=int, default=0, metavar="N",
        help="measure each model's effective receptive field on N validation images",
    )  # fmt: skip
    parser.add_argument(
        "--prune", action="store_true", help="delete each run's checkpoints once finished"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_arguments(parser, exclude=("atrous_rates", "seed"))

    def run(args) -> int:
        from deeplab_kit import provenance
        from deeplab_kit.ablation import ABLATION_DATA, SETTINGS, run_ablation
        from deeplab_kit.config import RunConfig, overrides_from_arguments

        settings = dict(SETTINGS)
        if args.only:
            unknown = sorted(set(args.only) - set(SETTINGS))
            if unknown:
                raise ValueError(f"unknown setting(s) {unknown}; known: {sorted(SETTINGS)}")
            settings = {label: SETTINGS[label] for label in args.only}
        for item in args.add:
            label, _, rates = item.partition("=")
            try:
                settings[label.strip()] = tuple(int(r) for r in rates.split(",") if r.strip())
            except ValueError:
                raise ValueError(f"--add {item!r}: expected LABEL=R,R,R (integers)") from None
        try:
            seeds = [int(k) for k in args.seeds.split(",")]
        except ValueError:
            raise ValueError(f"--seeds {args.seeds!r}: expected K,K,... (integers)") from None
        config = RunConfig.from_recipe(args.recipe, **overrides_from_arguments(args))
        if config.data_root is None and args.recipe == "ablation":
            from deeplab_kit.synthetic import make_synthetic_voc

            config = config.replace(data_root="data/synthetic-ablation")
            make_synthetic_voc(config.data_root, **ABLATION_DATA)
        record = provenance.start(device=config.device if config.device != "auto" else "cpu")
        table = run_ablation(
            settings, config, args.out, seeds=seeds, erf_images=args.erf_images,
            progress=not args.quiet, keep_checkpoints=not args.prune,
            provenance=provenance.finish(record),
        )  # fmt: skip
        print(table.drop(columns=["valid per branch", "finished"]).to_string(index=False))
        return 0

    parser.set_defaults(run=run)


# --- results -------------------------------------------------------------------------------


def _add_results(commands) -> None:
    parser = commands.add_parser(
        "results",
        help="the stored results of notebooks/results: list, make, verify",
        description="list: what is stored and how it was made. make NAME: (re)make a stored "
        "result with the kit's own code (a stopped make resumes). verify [NAME]: check that "
        "the stored results hold (scores, histories, tables, configuration, a retrained "
        "epoch); exits 1 on any mismatch.",
    )
    parser.add_argument("action", choices=("list", "make", "verify"))
    parser.add_argument("name", nargs="?", help="a stored result (make: required)")
    parser.add_argument(
        "--no-retrain", action="store_true", help="verify: skip retraining an epoch"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")

    def run(args) -> int:
        from deeplab_kit import results

        if args.action == "list":
            print(results.listing().to_string())
            return 0
        if args.action == "make":
            if not args.name:
                raise ValueError(f"results make needs a NAME: one of {sorted(results.RESULTS)}")
            command = f"python -m deeplab_kit results make {args.name}"
            folder = results.make(args.name, command=command, progress=not args.quiet)
            print(f"stored in {folder}")
            return 0
        problems = results.verify([args.name] if args.name else None,
                                  retrain=not args.no_retrain, progress=not args.quiet)  # fmt: skip
        for problem in problems:
            print(f"mismatch: {problem}", file=sys.stderr)
        print("stored results hold" if not problems else f"{len(problems)} mismatch(es)")
        return 1 if problems else 0

    parser.set_defaults(run=run)
