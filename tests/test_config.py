import json

import pytest

from deeplab_kit.config import (
    MODEL_PRESETS,
    RECIPES,
    ModelConfig,
    RunConfig,
    field_names,
    flat,
    parse_value,
)
from deeplab_kit.model import build_model


def test_the_network_is_declared_once_and_the_run_embeds_it():
    model = ModelConfig(backbone="resnet26", backbone_width=8, atrous_rates=(1, 2))
    assert build_model(model).config == model  # the model keeps what it was built from
    assert build_model(**model.to_dict()).config == model  # the keyword form is the same
    run = RunConfig(model=model)
    assert run.model is model and "output_stride" not in field_names(RunConfig)
    assert set(run.to_dict()["model"]) == set(field_names(ModelConfig))
    with pytest.raises(ValueError, match="unknown model setting 'atrous_rate'.*'atrous_rates'"):
        build_model(atrous_rate=(1, 2))


def test_the_older_flat_form_reads_as_the_nested_one():
    nested = RunConfig.from_recipe("demo")
    older = flat(nested)  # what checkpoints and stored results held before ModelConfig
    assert "model" not in older and older["output_stride"] == 16
    assert RunConfig.from_dict(older) == nested
    assert RunConfig.from_dict({**nested.to_dict(), "output_stride": 8}).model.output_stride == 8


def test_report_recipe_matches_the_report():
    config = RunConfig.from_recipe("report")
    model = config.model
    assert (model.backbone, model.output_stride, model.atrous_rates) == (
        "resnet50",
        16,
        (8, 12, 16),
    )
    assert (config.optimizer, config.lr, config.batch_size, config.image_size) == (
        "adam",
        1e-4,
        4,
        256,
    )
    assert (config.epochs, config.session_epochs) == (200, 20)
    # "divide the learning rate by 10" as a scheduled step at the start of session 6
    assert (config.schedule, config.lr_steps, config.lr_gamma) == ("step", (100,), 0.1)
    # "fine-tuning the DeepLabv3 ResNet50 model": an ImageNet backbone; the other reading kept
    assert config.model.pretrained_backbone is True
    scratch = RunConfig.from_recipe("report-scratch")
    assert scratch.model.pretrained_backbone is False
    assert scratch.replace(recipe="report", pretrained_backbone=True) == config


def test_each_report_setting_says_whether_it_is_stated_or_inferred_and_from_which_sentence():
    from deeplab_kit.course.quoted_numbers import REPORT_SETTINGS

    rows = REPORT_SETTINGS.set_index("setting")
    assert set(rows["stated or inferred"]) == {"stated", "inferred"}
    inferred = set(rows.index[rows["stated or inferred"] == "inferred"])
    assert {"backbone weights", "output stride", "learning rate", "feature map"} <= inferred
    assert rows["the report says"].str.len().min() > 10  # every setting with its words


def test_paper_and_pretrained_recipes():
    paper = RunConfig.from_recipe("paper")
    assert paper.model.multi_grid == (1, 2, 4) and paper.model.atrous_rates == (6, 12, 18)
    assert (paper.optimizer, paper.lr, paper.momentum, paper.weight_decay) == (
        "sgd",
        0.007,
        0.9,
        1e-4,
    )
    assert (paper.schedule, paper.poly_power, paper.batch_size, paper.image_size) == (
        "poly",
        0.9,
        16,
        513,
    )
    assert paper.train_split == "trainaug" and paper.model.pretrained_backbone is True
    pretrained = RunConfig.from_recipe("pretrained")
    assert pretrained.pretrained_weights == "COCO_WITH_VOC_LABELS_V1"
    assert pretrained.model.freeze_backbone
    # the model presets are reused, not repeated
    assert pretrained.model.output_stride == MODEL_PRESETS["torchvision"]["output_stride"]
    assert pretrained.model.atrous_rates == MODEL_PRESETS["torchvision"]["atrous_rates"]


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipes_round_trip_through_json(name):
    config = RunConfig.from_recipe(name)
    assert config.recipe == name
    plain = json.loads(json.dumps(config.to_dict()))
    assert RunConfig.from_dict(plain) == config


def test_overrides_from_python():
    config = RunConfig.from_recipe(
        "report", lr=1e-3, atrous_rates=[12, 16, 24], session_epochs=None
    )
    assert config.lr == 1e-3 and config.session_epochs is None
    assert config.model.atrous_rates == (12, 16, 24)
    assert config.model.backbone == "resnet50"  # the rest stays the recipe's
    assert config.replace(lr=5e-4).lr == 5e-4


def test_unknown_or_invalid_values_are_clear_errors():
    with pytest.raises(ValueError, match="unknown config field 'atrous_rate'.*'atrous_rates'"):
        RunConfig.from_recipe("report", atrous_rate=(1, 2, 3))
    with pytest.raises(ValueError, match="unknown recipe 'nope'"):
        RunConfig.from_recipe("nope")
    with pytest.raises(ValueError, match="optimizer must be one of"):
        RunConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match="field .batch_size. expects int"):
        RunConfig(batch_size="four")
    with pytest.raises(ValueError, match="accumulation must be at least 1"):
        RunConfig(accumulation=0)


def test_parse_value_converts_command_line_strings():
    assert parse_value("atrous_rates", "8,12,16") == (8, 12, 16)
    assert parse_value("eval_scales", "0.75,1,1.25") == (0.75, 1.0, 1.25)
    assert parse_value("multi_grid", "none") is None
    assert parse_value("lr", "1e-3") == 1e-3
    assert parse_value("channels_last", "false") is False
    assert parse_value("pretrained_backbone", "true") is True
    assert parse_value("pretrained_backbone", "weights/resnet50.pth") == "weights/resnet50.pth"
    assert parse_value("session_minutes", "none") is None
    with pytest.raises(ValueError, match="--batch-size expects int"):
        parse_value("batch_size", "x")
