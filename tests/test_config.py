import inspect
import json

import pytest

from deeplab_kit.model import build_model
from deeplab_kit.training.config import (
    MODEL_FIELDS,
    MODEL_PRESETS,
    RECIPES,
    RunConfig,
    field_names,
    parse_value,
)


def test_model_fields_mirror_build_model():
    assert set(inspect.signature(build_model).parameters) == set(MODEL_FIELDS)
    assert set(MODEL_FIELDS) <= set(field_names())
    defaults = {name: p.default for name, p in inspect.signature(build_model).parameters.items()}
    assert RunConfig().model_kwargs() == defaults  # same defaults as build_model's


def test_report_recipe_matches_the_report():
    config = RunConfig.from_recipe("report")
    assert (config.backbone, config.output_stride, config.atrous_rates) == (
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


def test_paper_and_pretrained_recipes():
    paper = RunConfig.from_recipe("paper")
    assert paper.multi_grid == (1, 2, 4) and paper.atrous_rates == (6, 12, 18)
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
    assert paper.train_split == "trainaug" and paper.pretrained_backbone is True
    pretrained = RunConfig.from_recipe("pretrained")
    assert pretrained.pretrained_weights == "COCO_WITH_VOC_LABELS_V1" and pretrained.freeze_backbone
    # the model presets are reused, not repeated
    assert pretrained.output_stride == MODEL_PRESETS["torchvision"]["output_stride"]
    assert pretrained.atrous_rates == MODEL_PRESETS["torchvision"]["atrous_rates"]


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
    assert (
        config.lr == 1e-3 and config.atrous_rates == (12, 16, 24) and config.session_epochs is None
    )
    assert config.backbone == "resnet50"  # the rest stays the recipe's
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
