"""The atrous-rate ablation on a tiny budget: a row per setting, the trained model's real rates."""

import json

import pytest

from deeplab_kit import ablation
from deeplab_kit.ablation import SETTINGS, read_ablation, run_ablation
from deeplab_kit.atrous import valid_share
from deeplab_kit.cli import main
from deeplab_kit.config import RunConfig
from deeplab_kit.synthetic import make_synthetic_voc

# 4 generated 32-px images in batches of 2 (2 steps), a 2x2 feature map at output stride 16.
TINY = dict(
    backbone="resnet26", backbone_width=16, aspp_channels=16, atrous_rates=(1, 2, 3),
    image_size=32, batch_size=2, eval_batch_size=2, epochs=1, amp="off", device="cpu",
)  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic_voc(tmp_path_factory.mktemp("voc"), num_train=4, num_val=2, size=32)


@pytest.fixture(scope="module")
def five(data, tmp_path_factory):
    """The five settings run once (shared by the tests that read the result)."""
    out = tmp_path_factory.mktemp("ablation")
    config = RunConfig.from_recipe("demo", data_root=str(data), **TINY)
    return out, config, run_ablation(SETTINGS, config, out, keep_checkpoints=False, command="test")


def test_one_row_per_setting_with_the_models_real_rates(five):
    out, config, table = five
    assert table["setting"].tolist() == list(SETTINGS)
    assert table["rates"].tolist() == list(SETTINGS.values())
    # Read back from each trained model's modules; the base config's (1, 2, 3) must not leak.
    assert table["model rates"].tolist() == list(SETTINGS.values())
    assert (table["feature map"] == "2x2").all()
    for rates, share in zip(table["rates"], table["valid weights"], strict=True):
        assert share == pytest.approx(sum(valid_share(2, r) for r in rates) / 3)
    assert table["epochs"].eq(1).all() and table["finished"].all()
    assert table["miou"].between(0, 1).all()


def test_results_are_written_and_read_back(five):
    out, config, table = five
    stored, produced = read_ablation(out)
    assert stored.drop(columns="train seconds").equals(table.drop(columns="train seconds"))
    assert produced["command"] == "test" and produced["config"]["atrous_rates"] == [1, 2, 3]
    assert (out / "ablation.csv").is_file()
    for label in SETTINGS:  # each setting is its own run folder; pruned of checkpoints
        folder = out / ablation.setting_folder(label)
        assert all(
            (folder / name).is_file() for name in ("history.csv", "metrics.json", "config.json")
        )
        assert not (folder / "checkpoints").exists()


def test_finished_settings_are_not_trained_again(five, monkeypatch):
    out, config, table = five

    def no_training(*args, **kwargs):
        raise AssertionError("a finished setting was trained again")

    monkeypatch.setattr("deeplab_kit.engine.train", no_training)
    again = run_ablation(SETTINGS, config, out, keep_checkpoints=False, command="again")
    assert again["miou"].tolist() == table["miou"].tolist()
    assert again["model rates"].tolist() == list(SETTINGS.values())


def test_a_pruned_setting_is_not_reused_for_another_configuration(five):
    from deeplab_kit.checkpoint import CheckpointError

    out, config, table = five
    with pytest.raises(CheckpointError, match="lr: checkpoint 0.006, requested 0.001"):
        run_ablation({"paper": SETTINGS["paper"]}, config.replace(lr=1e-3), out)


def test_bad_settings_are_refused(data, tmp_path):
    config = RunConfig.from_recipe("demo", data_root=str(data), **TINY)
    with pytest.raises(ValueError, match="no settings"):
        run_ablation({}, config, tmp_path)
    with pytest.raises(ValueError, match="distinct folder names"):
        run_ablation({"a b": (1, 1, 1), "a-b": (2, 2, 2)}, config, tmp_path)
    with pytest.raises(ValueError, match="not an ablation.json"):
        (tmp_path / "ablation.json").write_text(json.dumps({"rows": 3}))
        read_ablation(tmp_path)


def test_command_line(data, tmp_path, capsys):
    options = [f"--{k.replace('_', '-')}={','.join(map(str, v)) if isinstance(v, tuple) else v}"
               for k, v in TINY.items() if k != "atrous_rates"]  # fmt: skip
    out = tmp_path / "cli"
    code = main(["ablation", "--out", str(out), "--data", str(data), "--only", "paper",
                 "--add", "fitted=1,1,2", "--quiet", *options])  # fmt: skip
    assert code == 0
    table, produced = read_ablation(out)
    assert table["setting"].tolist() == ["paper", "fitted"]
    assert table["model rates"].tolist() == [(6, 12, 18), (1, 1, 2)]
    assert produced["command"].startswith("python -m deeplab_kit")
    assert "paper" in capsys.readouterr().out
    assert main(["ablation", "--out", str(out), "--data", str(data), "--only", "nope"]) == 2
    assert "unknown setting(s) ['nope']" in capsys.readouterr().err
