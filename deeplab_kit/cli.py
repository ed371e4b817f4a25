"""Command line: `python -m deeplab_kit <command> ...` (run with --help for the commands).

Each command is a small `_add_<command>` function that declares its arguments and the library
call it makes; the logic lives in the library modules, imported only when a command runs (so
`--help` answers without loading torch).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import re
import sys
import warnings

from deeplab_kit.config import (
    RECIPES,
    RunConfig,
    parse_value,
    recipes_table,
    setting_type,
    settings,
)


class _Parser(argparse.ArgumentParser):
    """argparse, with errors in one line from the command's own parser: what was wrong, the
    close match among its own options or choices, and its own --help."""

    argv: list[str] = []  # the command line being parsed (set by `main`)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {_explain(message, self)}; see {self.prog} --help\n")


def _explain(message: str, parser: argparse.ArgumentParser) -> str:
    """argparse's message, completed: a mistyped option or choice gets its close match; a
    missing required option names the near miss that was typed instead; short choice lists
    stay in the message."""
    choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if choice:
        known = re.findall(r"'([^']*)'", choice[2]) or [c.strip() for c in choice[2].split(",")]
        hint = _close(choice[1], known)
        if len(known) > 8:  # the commands' list is long: the close match says enough
            message = re.sub(r" \(choose from .*\)", "", message)
        return message + hint
    options = [option for action in parser._actions for option in action.option_strings]
    unknown = re.search(r"unrecognized arguments: (--[\w-]+)", message)
    if unknown:
        return message + _close(unknown[1], options)
    if "the following arguments are required" in message:
        typed = [arg.split("=")[0] for arg in _Parser.argv if arg.startswith("--")]
        strays = [arg for arg in typed if arg not in options]
        hints = [f"{stray} is not an option{_close(stray, options)}" for stray in strays]
        return "; ".join([message, *hints])
    return message


def _close(typed: str, known: list[str]) -> str:
    """ " (did you mean '--checkpoint'?)" when one of `known` is close to `typed`, else ""."""
    words = {k.lstrip("-"): k for k in known}
    close = difflib.get_close_matches(typed.lstrip("-"), list(words), n=1, cutoff=0.75)
    return f" (did you mean {words[close[0]]!r}?)" if close else ""


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(
        prog="python -m deeplab_kit",
        description="DeepLabv3 on PASCAL VOC 2012: data, training in sessions, evaluation, demo.",
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    for add in (
        _add_demo,
        _add_synth,
        _add_download,
        _add_train,
        _add_evaluate,
        _add_predict,
        _add_export,
        _add_ablation,
        _add_going_deeper,
        _add_results,
        _add_recipes,
    ):
        add(commands)
    _Parser.argv = list(sys.argv[1:] if argv is None else argv)
    args, extra = parser.parse_known_args(argv)
    if extra:  # an option the command does not have: its own parser says so, with its --help
        commands.choices[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    warnings.formatwarning = _warning_line
    try:
        return int(args.run(args) or 0)
    except (OSError, ValueError, RuntimeError) as error:
        # Bad input, a folder that cannot be written, an op without a kernel on Apple's GPU: one
        # clear line naming the file and the problem, no traceback. (FileNotFoundError and the
        # checkpoint errors are among these; NotImplementedError is a RuntimeError, and one
        # that is not about Apple's GPU keeps its traceback: `_one_line` explains only those.)
        if isinstance(error, NotImplementedError) and "MPS" not in str(error):
            raise
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return 2


def _warning_line(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def _one_line(error: BaseException) -> str:
    """An error as the kit reports it: its message; for an OSError from the system, the file it
    names and the reason ("runs/x: Read-only file system")."""
    if isinstance(error, OSError) and error.filename:
        return f"{error.filename}: {error.strerror or error}"
    if "MPS" in str(error):  # (imports torch only then: most errors come before it loads)
        from deeplab_kit.runtime.device import mps_missing_kernel

        return mps_missing_kernel(error) or str(error)
    return str(error)


# Settings the command line does not offer as --options: the recipe label (set by --recipe).
_NOT_ON_CLI = ("recipe",)


def _add_run_options(parser, *, exclude=()) -> None:
    """One --option per run setting, the network's included (`--atrous-rates 8,12,16`,
    `--eval-flip`, `--lr 1e-3`), absent from the parsed namespace unless given, so the
    recipe's value stands otherwise. `data_root` is also `--data`."""
    group = parser.add_argument_group("run configuration (each overrides the recipe's value)")
    for name, declared in settings().items():
        if name in _NOT_ON_CLI or name in exclude:
            continue
        flags = [f"--{name.replace('_', '-')}"]
        if name == "data_root":
            flags.insert(0, "--data")
        kind = setting_type(name)
        extra = dict(nargs="?", const=True) if kind is bool else {}  # `--eval-flip` alone: true
        group.add_argument(
            *flags,
            dest=name,
            type=_argument_type(name),
            default=argparse.SUPPRESS,
            metavar=_metavar(kind),
            help=declared.metadata.get("help", ""),
            **extra,
        )


def _run_overrides(namespace) -> dict:
    """The run settings given on the command line, as {name: value}."""
    names = [name for name in settings() if name not in _NOT_ON_CLI]
    return {name: getattr(namespace, name) for name in names if hasattr(namespace, name)}


def _metavar(kind) -> str:
    text = str(kind)  # "int | None", "tuple[int, ...]", ...
    if "tuple" in text:
        return "N,N,..." if "int" in text else "X,X,..."
    for name, metavar in (("bool", "BOOL"), ("float", "X"), ("int", "N")):
        if name in text and "str" not in text:
            return metavar
    return "TEXT"


def _argument_type(name: str):
    def convert(text: str):
        try:
            return parse_value(name, text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    convert.__name__ = name
    return convert


def _add_demo(commands) -> None:
    from deeplab_kit.data.synthetic import DEFAULT_ROOT

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
        default=DEFAULT_ROOT,
        help=f"synthetic dataset folder, made if absent (default: {DEFAULT_ROOT})",
    )
    parser.add_argument("--train", type=int, dest="num_train", help="training images to generate")
    parser.add_argument("--val", type=int, dest="num_val", help="validation images to generate")
    parser.add_argument("--size", type=int, help="generated image size in pixels")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_run_options(parser, exclude=("data_root",))

    def run(args) -> None:
        from deeplab_kit.course.demo import run_demo

        config = RunConfig.from_recipe("demo", **_run_overrides(args))
        sizes = {k: getattr(args, k) for k in ("num_train", "num_val", "size")}
        data = {k: size for k, size in sizes.items() if size is not None}
        run_demo(args.out, args.data_root, config=config, data=data, progress=not args.quiet)

    parser.set_defaults(run=run)


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
    parser.add_argument(
        "--rgb-masks",
        action="store_true",
        help="a dataset as your own often comes: four classes named in ROOT/classes.txt, masks "
        "drawn as RGB colours",
    )

    def run(args) -> None:
        from deeplab_kit.data.synthetic import make_rgb_mask_set, make_synthetic_voc

        make = make_rgb_mask_set if args.rgb_masks else make_synthetic_voc
        root = make(args.out, args.train, args.val, args.size, args.seed)
        kind = "RGB-mask set with classes.txt" if args.rgb_masks else "VOC"
        print(
            f"synthetic {kind} ({args.train} train, {args.val} val, {args.size}x{args.size}, "
            f"seed {args.seed}) in {root / 'VOCdevkit' / 'VOC2012'}"
        )

    parser.set_defaults(run=run)


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
        from deeplab_kit.data.download import download

        print(f"{args.dataset}: ready in {download(args.dataset, args.root)}")

    parser.set_defaults(run=run)


def _add_train(commands) -> None:
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
        help="starting values (default: report; `python -m deeplab_kit recipes` shows them)",
    )
    parser.add_argument(
        "--extend",
        action="store_true",
        help="resuming a poly or cosine run with another --epochs: stretch its schedule over "
        "the new length (without it, such a change is refused)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_run_options(parser)

    def run(args) -> None:  # exit 0 also when the session ended before the last epoch
        from deeplab_kit.training.loop import train

        config = RunConfig.from_recipe(args.recipe, **_run_overrides(args))
        train(config, args.out, progress=not args.quiet, extend=args.extend)

    parser.set_defaults(run=run)


def _add_evaluate(commands) -> None:
    parser = commands.add_parser(
        "evaluate",
        help="score a checkpoint on a split",
        description="Score a saved model (a .pt file, or a run folder: its newest checkpoint) "
        "on a split. Its images are preprocessed as its run's validation was; by default the "
        "scores are compared with each image's original mask at its original size (the paper's "
        "and the VOC server's protocol).",
    )
    parser.add_argument("--data", required=True, help="folder holding VOCdevkit/VOC2012")
    parser.add_argument("--checkpoint", required=True, help="a checkpoint file or a run folder")
    parser.add_argument("--out", help="write metrics.json and the metrics tables here")
    parser.add_argument(
        "--export-dir",
        metavar="DIR",
        help="write one VOC palette PNG per image id at its original size (the evaluation "
        "server's format)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_scoring_options(parser)
    parser.set_defaults(run=_evaluate)


def _add_scoring_options(parser) -> None:
    """`evaluate.Scoring`'s fields as options (`_evaluate` passes them on by name)."""
    parser.add_argument("--split", default="val", help="split to score (default: val)")
    parser.add_argument(
        "--protocol",
        default="original",
        choices=("original", "resized"),
        help="original: each image's own size and mask (default); resized: the masks resized "
        "as the validation preset resizes them",
    )
    parser.add_argument(
        "--output-stride",
        type=int,
        choices=(8, 16, 32),
        metavar="N",
        help="evaluate at this output stride (the paper: train at 16, evaluate at 8); dilations "
        "and ASPP rates scale with it",
    )
    parser.add_argument(
        "--scales",
        type=_scales,
        default=(1.0,),
        metavar="X,X,...",
        help="input scales whose scores are averaged, e.g. 0.5,0.75,1,1.25,1.5,1.75",
    )
    parser.add_argument(
        "--flip", action="store_true", help="also average horizontally flipped inputs"
    )
    parser.add_argument("--batch-size", type=int, help="default: the run's")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--amp",
        choices=("auto", "bf16", "fp16", "off"),
        help="precision (default: the arithmetic the run trained in; auto: this machine's rule)",
    )
    parser.add_argument("--num-workers", type=int, default=0)


def _scales(text: str) -> tuple[float, ...]:
    """--scales "0.5,1,1.5": positive numbers, or the kit's own one-line error."""
    scales = _argument_type("eval_scales")(text)
    if not scales or any(scale <= 0 for scale in scales):
        raise argparse.ArgumentTypeError(f"every scale must be a positive number, got {text!r}")
    return scales


def _evaluate(args) -> None:
    from deeplab_kit.evaluate import Scoring, evaluate_checkpoint
    from deeplab_kit.metrics import report_table
    from deeplab_kit.runtime.run_files import markdown_table

    names = {f.name for f in dataclasses.fields(Scoring)}  # the scoring options
    scoring = {name: value for name, value in vars(args).items() if name in names}
    options = dict(out_dir=args.out, export_dir=args.export_dir, progress=not args.quiet)
    metrics = evaluate_checkpoint(args.checkpoint, args.data, **options, **scoring)
    print(
        f"{metrics['split']}, protocol {metrics['protocol']}, output stride "
        f"{metrics['output_stride']}, scales {metrics['scales']}, flip {metrics['flip']}"
    )
    print(markdown_table(report_table({"model": metrics})), end="")
    if args.export_dir:
        print(f"predictions for the VOC server in {args.export_dir}")


def _add_ablation(commands) -> None:
    parser = commands.add_parser(
        "ablation",
        help="the ASPP rate ablation: a dilated and an undilated backbone x six ASPP settings",
        description="The ablation of notebook 04: the recipe's model on two backbones of one "
        "depth (dilated; undilated: stride 1 and dilation 1 past the output stride) x six ASPP "
        "settings (control: the 1x1 branch alone; rate 1 (1,1,1); small rates (2,4,6); paper "
        "(6,12,18); report (8,12,16); paper + pooling), each setting with its seeds (the "
        "planned contrasts' eight, the others' two; --seeds for one list for all), one run "
        "folder each under --out, the table in --out/ablation.csv. Run again with the same --out "
        "to resume. The stored ablation (with its learning-rate sweep and convergence check) is "
        "made by `python -m deeplab_kit results make ablation`.",
    )
    _experiment_options(parser, "ablation")
    parser.add_argument(
        "--erf-images",
        type=int,
        default=0,
        metavar="N",
        help="measure each model's effective receptive field on N validation images",
    )
    _add_run_options(parser, exclude=("atrous_rates", "image_pooling", "dilated", "seed"))
    parser.set_defaults(run=_ablation)


def _add_going_deeper(commands) -> None:
    parser = commands.add_parser(
        "going-deeper",
        help="the paper's going-deeper experiments: block7 at output stride 8..256 (Table 1), "
        "blocks 4..7 at output stride 16 (Table 2)",
        description="The paper's Tables 1-2 at the recipe's scale: the cascaded model (no ASPP) "
        "with block7 at output stride 8, 16, 32, 64, 128 and 256 on 136-pixel images "
        "(--table 1), or blocks 4, 5, 6 and 7 at output stride 16 on 272-pixel images "
        "(--table 2), once per seed, one run folder each under --out, the table in "
        "--out/going-deeper.csv. Run again with the same --out to resume. The stored results "
        "are made by `python -m deeplab_kit results make going-deeper` and `... cascaded-blocks`.",
    )
    _experiment_options(parser, "going-deeper")
    parser.add_argument("--table", type=int, choices=(1, 2), default=1, help="the paper's table")
    _add_run_options(parser, exclude=("extra_blocks", "output_stride", "aspp", "seed"))
    parser.set_defaults(run=_going_deeper)


def _experiment_options(parser, default: str) -> None:
    parser.add_argument("--out", required=True, help="folder for the runs and the table")
    parser.add_argument(
        "--recipe",
        default=default,
        choices=sorted(RECIPES),
        help=f"starting values (default: {default})",
    )
    parser.add_argument(
        "--seeds", metavar="K,K,...", help="seeds for every setting (default: the experiment's)"
    )
    parser.add_argument("--workers", type=int, default=1, help="runs trained at once (default: 1)")
    parser.add_argument(
        "--prune", action="store_true", help="delete each run's checkpoints once finished"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _experiment_config(args, synthetic_data: dict, folder: str):
    """The run configuration, the seeds (None: the experiment's) and `run_grid`'s options an
    experiment command asked for; without --data, the experiment's generated dataset (made if
    absent) at its own image size."""
    from deeplab_kit.data.synthetic import DEFAULT_ROOT, make_synthetic_voc

    try:
        seeds = tuple(int(k) for k in args.seeds.split(",")) if args.seeds else None
    except ValueError:
        raise ValueError(f"--seeds {args.seeds!r}: expected K,K,... (integers)") from None
    config = RunConfig.from_recipe(args.recipe, **_run_overrides(args))
    if config.data_root is None:
        config = config.replace(
            data_root=f"{DEFAULT_ROOT}-{folder}", image_size=synthetic_data["size"]
        )
        make_synthetic_voc(config.data_root, **synthetic_data)
    options = dict(progress=not args.quiet, keep_checkpoints=not args.prune, workers=args.workers)
    return config, seeds, options


def _ablation(args) -> None:
    from deeplab_kit.course import ablation

    config, seeds, options = _experiment_config(args, ablation.DATA, "ablation")
    rows = ablation.run(config, args.out, erf_images=args.erf_images, seeds=seeds, **options)
    shown = ["backbone", "setting", "seed", "miou", "interior miou", "band miou"]
    print(ablation.table(rows)[shown].to_string(index=False))


def _going_deeper(args) -> None:
    import pandas as pd

    from deeplab_kit.course import going_deeper
    from deeplab_kit.files import write_text

    design = going_deeper.OUTPUT_STRIDE if args.table == 1 else going_deeper.CASCADED
    config, seeds, options = _experiment_config(args, design.data, design.name)
    table = pd.DataFrame(going_deeper.run(design, config, args.out, seeds=seeds, **options))
    write_text(f"{args.out}/going-deeper.csv", table.to_csv(index=False))
    print(table[["setting", "seed", "feature map", "miou"]].to_string(index=False))


def _add_predict(commands) -> None:
    parser = commands.add_parser(
        "predict",
        help="segment your own photos with a trained run or torchvision's pretrained model",
        description="For each image (files, or the images of folders): OUT/<name>.png, the "
        "predicted classes at the image's own size as a palette PNG with VOC's colours, and "
        "OUT/<name>-overlay.png (photo | prediction over it | the classes found). A file that is "
        "not an image is named in one line and the others are still written; the exit status "
        "is 1 when any failed.",
    )
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER")
    parser.add_argument("--checkpoint", metavar="RUN_OR_FILE", help="a run folder or a .pt file")
    parser.add_argument(
        "--weights",
        metavar="torchvision|FILE",
        help="torchvision's DeepLabv3-ResNet50 with VOC labels instead of a run ('torchvision' "
        "downloads it; or a saved state dict)",
    )
    parser.add_argument("--out", required=True, help="folder for the PNGs")
    parser.add_argument("--device", default="auto", help="auto (cuda, else mps, else cpu), ...")

    def run(args) -> int:
        from deeplab_kit.predict import load_predictor, predict_files

        if (args.checkpoint is None) == (args.weights is None):
            raise ValueError("give one of --checkpoint RUN_OR_FILE and --weights torchvision")
        predictor = load_predictor(args.checkpoint, weights=args.weights)
        report = predict_files(predictor, args.inputs, args.out, device=args.device)
        for path, reason in report.failed:
            print(f"error: {path}: {reason}; skipped", file=sys.stderr)
        print(f"{len(report.written)} prediction(s) in {args.out}")
        return 1 if report.failed else 0

    parser.set_defaults(run=run)


def _add_export(commands) -> None:
    parser = commands.add_parser(
        "export",
        help="a trained run as an ONNX model (any batch and image size)",
        description="Write the run's model to --out as ONNX: images float32 (N, 3, H, W), RGB "
        "in 0..255 (ImageNet's normalisation inside), logits (N, classes, H, W) out; and a "
        "JSON beside it with the class names and colours. Checked at once by onnxruntime "
        "against torch. Needs the onnx, onnxscript and onnxruntime packages.",
    )
    parser.add_argument("--checkpoint", required=True, metavar="RUN_OR_FILE")
    parser.add_argument("--out", required=True, help="the .onnx file to write")

    def run(args) -> None:
        from deeplab_kit.export import export

        path = export(args.checkpoint, args.out)
        print(f"{path} and {path.with_suffix('.json')}: onnxruntime agrees with torch")

    parser.set_defaults(run=run)


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
    parser.add_argument(
        "name", nargs="?", help="a stored result (make: required; list: its details)"
    )
    parser.add_argument(
        "--no-retrain", action="store_true", help="verify: skip retraining an epoch"
    )
    parser.add_argument(
        "--other-code",
        action="store_true",
        help="make: resume a stopped make on other code than it started on (the record says so)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")

    def run(args) -> int:
        from deeplab_kit.course import results

        if args.action == "list":
            if args.name:
                print(results.details(args.name))
            else:
                print(results.listing().to_string())
                print("details: python -m deeplab_kit results list NAME")
            return 0
        if args.action == "make":
            if not args.name:
                raise ValueError(f"results make needs a NAME: one of {sorted(results.RESULTS)}")
            command = f"python -m deeplab_kit results make {args.name}"
            folder = results.make(
                args.name, command=command, progress=not args.quiet, other_code=args.other_code
            )
            print(f"stored in {folder}")
            return 0
        problems = results.verify([args.name] if args.name else None, retrain=not args.no_retrain)
        for problem in problems:
            print(f"mismatch: {problem}", file=sys.stderr)
        print("stored results hold" if not problems else f"{len(problems)} mismatch(es)")
        return 1 if problems else 0

    parser.set_defaults(run=run)


def _add_recipes(commands) -> None:
    parser = commands.add_parser(
        "recipes",
        help="the recipes' values side by side",
        description="Every recipe's run configuration, one column per recipe (each value can be "
        "overridden on the command line: --lr 1e-3, --atrous-rates 12,16,24, ...).",
    )
    parser.add_argument("--all", action="store_true", help="also the fields all recipes share")

    def run(args) -> None:
        print(recipes_table(differing_only=not args.all))

    parser.set_defaults(run=run)
