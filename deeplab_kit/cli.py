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
    for add in (_add_demo, _add_synth, _add_download, _add_train, _add_evaluate):
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
