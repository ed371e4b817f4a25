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
    for add in (_add_demo, _add_synth, _add_download, _add_train, _add_evaluate, _add_ablation):
        add(commands)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        # Bad input: one clear line naming the file and the problem, no traceback.
        print(f"error: {error}", file=sys.stderr)
        return 2


# --- demo (issue 5) ------------------------------------------------------------------------


def _add_demo(commands) -> None:
    pass


# --- synth (issue 3) -----------------------------------------------------------------------


def _add_synth(commands) -> None:
    pass


# --- download (issue 3) --------------------------------------------------------------------


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


# --- train (issue 5) -----------------------------------------------------------------------


def _add_train(commands) -> None:
    pass


# --- evaluate (issues 4 and 5) -------------------------------------------------------------


def _add_evaluate(commands) -> None:
    pass


# --- ablation (issue 6) --------------------------------------------------------------------


def _add_ablation(commands) -> None:
    from deeplab_kit.config import RECIPES, add_arguments

    parser = commands.add_parser(
        "ablation",
        help="train one model per set of ASPP rates and tabulate mIoU",
        description="The atrous-rate ablation of notebook 02: the recipe's model trained once per "
        "setting (no atrous (1,1,1), paper (6,12,18), report (8,12,16), report variant "
        "(12,16,24), OS8 rates (12,24,36)), one run folder each under --out, and the table in "
        "--out/ablation.csv and ablation.json. Run again with the same --out to resume.",
    )
    parser.add_argument("--out", required=True, help="folder for the runs and the table")
    parser.add_argument(
        "--recipe", default="demo", choices=sorted(RECIPES), help="starting values (default: demo)"
    )
    parser.add_argument(
        "--only", nargs="+", metavar="LABEL", help="run only these of the five settings"
    )
    parser.add_argument(
        "--add",
        nargs="+",
        default=[],
        metavar="LABEL=R,R,R",
        help='more settings, e.g. --add "fitted=1,2,3"',
    )
    parser.add_argument(
        "--prune", action="store_true", help="delete each setting's checkpoints once finished"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_arguments(parser, exclude=("atrous_rates",))

    def run(args) -> int:
        from deeplab_kit.ablation import SETTINGS, run_ablation
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
                settings[label.strip()] = tuple(int(r) for r in rates.split(","))
            except ValueError:
                raise ValueError(f"--add {item!r}: expected LABEL=R,R,R (integers)") from None
        config = RunConfig.from_recipe(args.recipe, **overrides_from_arguments(args))
        if config.data_root is None and args.recipe == "demo":
            from deeplab_kit.demo import DEMO_DATA
            from deeplab_kit.synthetic import make_synthetic_voc

            config = config.replace(data_root="data/synthetic")
            make_synthetic_voc(config.data_root, **DEMO_DATA)
        table = run_ablation(
            settings, config, args.out, progress=not args.quiet, keep_checkpoints=not args.prune
        )
        print(table.to_string(index=False))
        return 0

    parser.set_defaults(run=run)
