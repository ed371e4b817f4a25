"""The train, evaluate and demo commands, end to end on a tiny generated dataset."""

import argparse
import json

import pytest

from deeplab_kit.cli import _add_evaluate, _add_train, main
from deeplab_kit.course.figures import read_history
from tests.conftest import tiny_options

# conftest's tiny run as options (each test gives its own --epochs)
TINY = [*tiny_options(exclude=("epochs",), atrous_rates=(1, 2)), "--quiet"]


pytestmark = pytest.mark.usefixtures("one_thread")


def parse_train(argv):
    commands = argparse.ArgumentParser().add_subparsers(dest="command")
    _add_train(commands)
    return commands.choices["train"].parse_args(argv)


def test_evaluate_passes_every_scoring_field_but_the_memory_layout_by_name():
    """`evaluate` hands its options to `evaluate_checkpoint` by Scoring's field names: a field
    without an option (or an option that only shares a name) would pass silently."""
    import dataclasses

    from deeplab_kit.evaluate import Scoring

    commands = argparse.ArgumentParser().add_subparsers(dest="command")
    _add_evaluate(commands)
    dests = {action.dest for action in commands.choices["evaluate"]._actions}
    fields = {field.name for field in dataclasses.fields(Scoring)}
    assert fields - dests == {"channels_last"}  # the checkpoint's own layout unless told


def test_train_options_come_from_the_config_fields():
    from deeplab_kit.cli import _run_overrides
    from deeplab_kit.config import RunConfig

    args = parse_train(
        [
            "--out",
            "run",
            "--recipe",
            "paper",
            "--atrous-rates",
            "8,12,16",
            "--lr",
            "1e-3",
            "--eval-flip",
            "--channels-last",
            "false",
            "--session-minutes",
            "none",
            "--data",
            "data/VOC",
        ]
    )
    overrides = _run_overrides(args)
    assert overrides == {
        "atrous_rates": (8, 12, 16),
        "lr": 1e-3,
        "eval_flip": True,
        "channels_last": False,
        "session_minutes": None,
        "data_root": "data/VOC",
    }
    config = RunConfig.from_recipe(args.recipe, **overrides)
    assert config.model.multi_grid == (1, 2, 4)  # the paper's
    assert config.model.atrous_rates == (8, 12, 16)  # given


def test_bad_values_are_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        parse_train(["--out", "run", "--batch-size", "four"])
    assert "--batch-size expects int, got 'four'" in capsys.readouterr().err


def test_train_then_evaluate(synthetic_root, tmp_path, capsys):
    run = tmp_path / "run"
    argv = [
        "train",
        "--recipe",
        "demo",
        "--data",
        str(synthetic_root),
        "--out",
        str(run),
        "--epochs",
        "2",
        "--session-epochs",
        "1",
        *TINY,
    ]
    assert main(argv) == 0
    assert [r["session"] for r in read_history(run / "history.csv").to_dict("records")] == [1]
    assert main(argv) == 0  # the same command resumes
    assert [r["session"] for r in read_history(run / "history.csv").to_dict("records")] == [1, 2]

    scored = tmp_path / "scored"
    argv = [
        "evaluate",
        "--data",
        str(synthetic_root),
        "--checkpoint",
        str(run),
        "--out",
        str(scored),
        "--quiet",
    ]
    assert main(argv) == 0
    metrics = json.loads((scored / "metrics.json").read_text())
    assert 0.0 <= metrics["miou"] <= 1.0 and metrics["checkpoint"].endswith("epoch-0002.pt")
    # the same weights score the same as the run's own last validation
    assert metrics["miou"] == pytest.approx(json.loads((run / "metrics.json").read_text())["miou"])
    assert "miou" in (scored / "metrics.md").read_text().lower()
    assert (scored / "metrics.csv").is_file()
    assert "|" in capsys.readouterr().out  # the table is printed

    # the paper's inference on the OS16 run: OS8, multi-scale, flips, and the server's PNGs
    server = tmp_path / "server"
    argv = [
        "evaluate",
        "--data",
        str(synthetic_root),
        "--checkpoint",
        str(run),
        "--output-stride",
        "8",
        "--scales",
        "0.5,1,1.5",
        "--flip",
        "--export-dir",
        str(server),
        "--out",
        str(scored),
        "--quiet",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "protocol original, output stride 8, scales [0.5, 1.0, 1.5], flip True" in out
    assert f"predictions for the VOC server in {server}" in out
    metrics = json.loads((scored / "metrics.json").read_text())
    assert (metrics["output_stride"], metrics["flip"]) == (8, True)
    val_ids = (
        (synthetic_root / "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt").read_text().split()
    )
    assert sorted(p.stem for p in server.glob("*.png")) == sorted(val_ids)


def test_bad_input_is_one_clear_line(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert (
        main(
            [
                "train",
                "--data",
                str(missing),
                "--out",
                str(tmp_path / "run"),
                "--epochs",
                "1",
                *TINY,
            ]
        )
        == 2
    )
    assert "nowhere" in capsys.readouterr().err
    assert (
        main(["evaluate", "--data", str(missing), "--checkpoint", str(tmp_path / "none.pt")]) == 2
    )
    assert "none.pt: no checkpoint there" in capsys.readouterr().err


def test_demo_writes_the_run_folder(tmp_path):
    data, out = tmp_path / "synthetic", tmp_path / "demo"
    argv = [
        "demo",
        "--out",
        str(out),
        "--data",
        str(data),
        "--train",
        "8",
        "--val",
        "4",
        "--size",
        "32",
        "--epochs",
        "1",
        *TINY,
    ]
    assert main(argv) == 0
    assert (data / "VOCdevkit" / "VOC2012").is_dir()  # generated, as it was absent
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["miou"] <= 1.0 and len(metrics["iou"]) == 21
    for name in ("history.csv", "metrics.md", "metrics.csv", "loss_curve.png", "predictions.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"


# --- errors in one line, before any work ------------------------------------------------------


def test_an_unusable_out_fails_at_once_in_one_line(synthetic_root, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    for out, reason in [
        (blocker, "is a file, not a folder"),
        (blocker / "run", "cannot write there (Not a directory)"),
    ]:
        code = main(
            [
                "train",
                "--recipe",
                "demo",
                "--data",
                str(synthetic_root),
                "--out",
                str(out),
                "--epochs",
                "1",
                *TINY,
            ]
        )
        err = capsys.readouterr().err
        assert code == 2 and reason in err and str(out) in err
        assert err.count("\n") == 1 and "Traceback" not in err


def test_a_corrupt_checkpoint_is_named_without_unsafe_advice(synthetic_root, tmp_path, capsys):
    garbage = tmp_path / "random.pt"
    garbage.write_bytes(bytes(range(256)) * 40)
    assert main(["evaluate", "--data", str(synthetic_root), "--checkpoint", str(garbage)]) == 2
    err = capsys.readouterr().err
    assert str(garbage) in err and err.count("\n") == 1
    assert "weights_only" not in err and "arbitrary code" not in err


def test_typos_get_one_line_with_the_close_match(capsys):
    for argv, hint in [
        (["train", "--recipe", "reprot", "--out", "x"], "did you mean 'report'?"),
        (["trian"], "did you mean 'train'?"),
        (["train", "--out", "x", "--lrr", "3"], "did you mean '--lr'?"),
    ]:
        with pytest.raises(SystemExit) as exited:
            main(argv)
        err = capsys.readouterr().err
        assert exited.value.code == 2 and hint in err and "--help" in err
        assert err.count("\n") == 1 and "usage:" not in err


def test_help_and_recipes_answer_without_importing_torch():
    """What makes --help fast: the command line imports torch only once a command runs
    (`python benchmarks/bench_cli.py` times it beside `import torch`)."""
    import subprocess
    import sys

    probe = (
        "import sys; from deeplab_kit.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "main(['recipes']); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("False")
    assert "ablation" in out.stdout and "atrous_rates" in out.stdout  # the recipes, side by side


# --- the rough edges a student met, each with its message -----------------------------------


@pytest.mark.parametrize(
    "argv,said",
    [
        (["train", "--out", "x", "--epohcs", "1"],
         "python -m deeplab_kit train: error: unrecognized arguments: --epohcs 1 (did you mean "
         "'--epochs'?); see python -m deeplab_kit train --help"),
        (["demo", "--bogus"],
         "python -m deeplab_kit demo: error: unrecognized arguments: --bogus; see python -m "
         "deeplab_kit demo --help"),
        (["evaluate", "--chekpoint", "X", "--data", "d"],
         "--chekpoint is not an option (did you mean '--checkpoint'?)"),
        (["evaluate", "--checkpoint", "c", "--data", "d", "--output-stride", "4"],
         "invalid choice: 4 (choose from 8, 16, 32)"),
        (["evaluate", "--checkpoint", "c", "--data", "d", "--scales", "0,1"],
         "argument --scales: every scale must be a positive number, got '0,1'"),
    ],
)  # fmt: skip
def test_a_command_s_errors_come_from_its_own_parser(argv, said, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert said in err and len(err.strip().splitlines()) == 1


def test_a_missing_split_never_suggests_writing_into_a_folder_that_holds_voc(
    synthetic_root, capsys
):
    argv = ["evaluate", "--data", str(synthetic_root), "--checkpoint", "x", "--split", "nosuch"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "synth --out" not in err


def test_a_finished_run_says_so_without_a_new_session(synthetic_root, tmp_path, capsys):
    argv = ["train", "--recipe", "demo", "--data", str(synthetic_root), "--out", str(tmp_path),
            "--epochs", "1", *[a for a in TINY if a != "--quiet"]]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    assert main(argv) == 0
    out = capsys.readouterr()
    said = out.out + out.err
    assert "the run is finished (all 1 epochs are done)" in said
    assert "resuming" not in said and "session" not in said and "path:" not in said


def test_results_list_fits_a_terminal_and_details_on_request(capsys):
    assert main(["results", "list"]) == 0
    listed = capsys.readouterr().out
    assert max(len(line) for line in listed.splitlines()) <= 100
    assert main(["results", "list", "demo"]) == 0
    assert "command:  python -m deeplab_kit results make demo" in capsys.readouterr().out
