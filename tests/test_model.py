"""DeepLabv3 model: shapes, dilations, torchvision equivalence, weights loading, bad options."""

from __future__ import annotations

import math
import urllib.error

import pytest
import torch
from torch import nn
from torchvision.models import resnet50
from torchvision.models.segmentation import DeepLabV3_ResNet50_Weights, deeplabv3_resnet50

from deeplab_kit.course.atrous import receptive_field, receptive_field_from_config
from deeplab_kit.model import build_model, describe, from_preset, load_torchvision_weights


def small(**options):
    """A CPU-sized model: the reduced-depth backbone and a narrow head."""
    return build_model(**{"backbone": "resnet26", "aspp_channels": 16, **options})


@pytest.fixture(scope="module")
def torchvision_pair():
    torch.manual_seed(0)
    reference = deeplabv3_resnet50(
        weights=None, weights_backbone=None, num_classes=21, aux_loss=True
    )
    ours = build_model(output_stride=8, atrous_rates=(12, 24, 36), multi_grid=None, aux_loss=True)
    return reference.eval(), ours.eval()


# --- torchvision equivalence ---------------------------------------------------------------


def test_loads_torchvision_weights_and_matches_its_output(torchvision_pair):
    reference, ours = torchvision_pair
    load_torchvision_weights(ours, reference.state_dict())
    x = torch.randn(1, 3, 97, 113)
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    assert got["out"].shape == (1, 21, 97, 113)
    torch.testing.assert_close(got["out"], expected["out"], atol=1e-4, rtol=0)
    torch.testing.assert_close(got["aux"], expected["aux"], atol=1e-4, rtol=0)


def test_parameter_count_equals_torchvision(torchvision_pair):
    reference, ours = torchvision_pair
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in reference.parameters()) == 42_004_074


def test_torchvision_preset_is_the_reference_configuration():
    d = describe(from_preset("torchvision"))
    assert d["output_stride"] == 8 and d["atrous_rates"] == (12, 24, 36) and d["aux_head"]
    assert d["dilations"]["layer3"] == (1, 2, 2, 2, 2, 2)
    assert d["dilations"]["layer4"] == (2, 4, 4)  # torchvision: first block keeps the old rate


def test_weights_from_a_file(tmp_path, torchvision_pair):
    reference, _ = torchvision_pair
    path = tmp_path / "deeplabv3.pth"
    torch.save(reference.state_dict(), path)
    model = from_preset("torchvision")
    load_torchvision_weights(model, path)
    torch.testing.assert_close(
        model.state_dict()["classifier.4.weight"], reference.state_dict()["classifier.4.weight"]
    )


def test_aux_weights_are_ignored_by_a_model_without_aux_head(torchvision_pair):
    reference, _ = torchvision_pair
    model = build_model(output_stride=8, atrous_rates=(12, 24, 36))
    load_torchvision_weights(model, reference.state_dict())
    torch.testing.assert_close(model.backbone.conv1.weight, reference.backbone.conv1.weight)


def test_skip_classifier_keeps_a_new_head_for_other_classes(torchvision_pair):
    reference, _ = torchvision_pair
    model = from_preset("torchvision", num_classes=5)
    before = model.classifier[4].weight.clone()
    load_torchvision_weights(model, reference.state_dict(), skip_classifier=True)
    assert torch.equal(model.classifier[4].weight, before)  # the new 1x1 conv is untouched
    torch.testing.assert_close(
        model.classifier[0].project[0].weight, reference.classifier[0].project[0].weight
    )
    with pytest.raises(ValueError, match=r"classifier\.4\.weight.*\(21, 256, 1, 1\)"):
        load_torchvision_weights(from_preset("torchvision", num_classes=5), reference.state_dict())


def test_mismatched_weights_name_the_first_tensor_that_does_not_fit(torchvision_pair):
    reference, _ = torchvision_pair
    with pytest.raises(ValueError, match=r"'classifier\.0\.convs\.0\.0\.weight'"):
        load_torchvision_weights(
            from_preset("torchvision", aspp_channels=128), reference.state_dict()
        )
    with pytest.raises(ValueError, match=r"lack tensor 'backbone\.layer5"):
        load_torchvision_weights(from_preset("torchvision", extra_blocks=1), reference.state_dict())
    with pytest.raises(ValueError, match="'extra.weight', which this model does not have"):
        load_torchvision_weights(
            from_preset("torchvision"), {**reference.state_dict(), "extra.weight": torch.zeros(1)}
        )


def test_unreadable_or_tampered_weight_files_are_refused(tmp_path):
    truncated = tmp_path / "truncated.pth"
    torch.save({"w": torch.zeros(100)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:50])
    with pytest.raises(ValueError, match="truncated.pth: not a readable state dict"):
        load_torchvision_weights(small(), truncated)

    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (marker.write_text, ("pwned",))

    tampered = tmp_path / "tampered.pth"
    torch.save({"w": Payload()}, tampered)
    with pytest.raises(ValueError, match="tampered.pth"):
        load_torchvision_weights(small(), tampered)
    assert not marker.exists()  # weights_only=True never ran the payload

    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_torchvision_weights(small(), tmp_path / "missing.pth")


def test_offline_weights_download_gets_a_clear_message(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(
        RuntimeError, match=r"(?s)COCO_WITH_VOC_LABELS_V1.*Offline\?.*deeplabv3_resnet50_coco"
    ):
        load_torchvision_weights(
            from_preset("torchvision"), DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1
        )


def test_pretrained_backbone_from_a_file(tmp_path):
    torch.manual_seed(1)
    imagenet = resnet50()
    path = tmp_path / "resnet50.pth"
    torch.save(imagenet.state_dict(), path)
    model = build_model(pretrained_backbone=path, output_stride=16)
    assert torch.equal(model.backbone.layer4[2].conv3.weight, imagenet.layer4[2].conv3.weight)
    with pytest.raises(ValueError, match="do not fit a resnet26"):
        build_model(backbone="resnet26", pretrained_backbone=path)


# --- shapes and dilations --------------------------------------------------------------------


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_logits_at_the_input_size_and_features_at_the_output_stride(output_stride):
    model = small(output_stride=output_stride).eval()
    for size in [(64, 64), (65, 47), (33, 97)]:
        with torch.no_grad():
            out = model(torch.randn(2, 3, *size))
        assert set(out) == {"out"}
        assert out["out"].shape == (2, 21, *size)
    with torch.no_grad():
        features = model.backbone(torch.randn(1, 3, 128, 96))
    assert features["out"].shape[-2:] == (
        128 // output_stride,
        96 // output_stride,
    )  # (N, 2048, h, w)
    assert features["low"].shape[-2:] == (32, 24)
    assert describe(model)["output_stride"] == output_stride


@pytest.mark.parametrize(
    "output_stride, multi_grid, layer3, layer4",
    [
        (32, None, (1, 1, 1, 1, 1, 1), (1, 1, 1)),
        (16, None, (1, 1, 1, 1, 1, 1), (1, 2, 2)),
        (8, None, (1, 2, 2, 2, 2, 2), (2, 4, 4)),
        (16, (1, 2, 4), (1, 1, 1, 1, 1, 1), (2, 4, 8)),
        (8, (1, 2, 4), (1, 2, 2, 2, 2, 2), (4, 8, 16)),
        (16, (1, 1, 1), (1, 1, 1, 1, 1, 1), (2, 2, 2)),
        (32, (1, 2, 4), (1, 1, 1, 1, 1, 1), (1, 2, 4)),
    ],
)
def test_dilations_per_stage(output_stride, multi_grid, layer3, layer4):
    model = build_model(output_stride=output_stride, multi_grid=multi_grid, aspp_channels=16)
    dilations = describe(model)["dilations"]
    assert dilations["layer1"] == (1, 1, 1) and dilations["layer2"] == (1, 1, 1, 1)
    assert dilations["layer3"] == layer3 and dilations["layer4"] == layer4
    for block, rate in zip(model.backbone.layer4, layer4, strict=True):
        assert block.conv2.padding == (rate, rate)  # padding = rate keeps the map's size


def test_paper_preset_is_os16_multigrid_and_report_preset_has_its_rates():
    paper = describe(from_preset("paper", aspp_channels=16))
    assert paper["output_stride"] == 16 and paper["dilations"]["layer4"] == (2, 4, 8)
    assert paper["atrous_rates"] == (6, 12, 18)
    report = describe(from_preset("report"))
    assert report["atrous_rates"] == (8, 12, 16) and report["output_stride"] == 16
    assert report["parameters"] == 39_638_869  # torchvision's model without the aux head


def test_extra_blocks_cascade_with_doubling_rates():
    model = small(output_stride=16, multi_grid=(1, 2), extra_blocks=3).eval()
    dilations = describe(model)["dilations"]
    assert dilations["layer4"] == (2, 4)
    assert (
        dilations["layer5"] == (4, 8)
        and dilations["layer6"] == (8, 16)
        and dilations["layer7"] == (16, 32)
    )
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64))["out"].shape == (1, 21, 64, 64)


def test_any_number_of_atrous_branches_and_optional_image_pooling():
    for rates in [(3,), (2, 4, 6, 8, 10)]:
        for pooling in (True, False):
            model = small(atrous_rates=rates, image_pooling=pooling)
            d = describe(model)
            assert d["atrous_rates"] == rates and d["image_pooling"] is pooling
            branches = 1 + len(rates) + int(pooling)
            assert model.classifier[0].project[0].in_channels == branches * 16


def test_decoder_and_aux_heads():
    model = small(decoder=True, aux_loss=True, num_classes=7).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 67, 45))
    assert out["out"].shape == (2, 7, 67, 45) and out["aux"].shape == (2, 7, 67, 45)
    assert describe(model)["decoder"] and model.classifier.low_level[0].out_channels == 48


def test_training_step_runs_backward_through_every_head():
    model = small(aux_loss=True).train()
    out = model(torch.randn(2, 3, 48, 48))
    (out["out"].mean() + out["aux"].mean()).backward()
    assert all(p.grad is not None for p in model.parameters())


# --- frozen backbone -------------------------------------------------------------------------


def test_frozen_backbone_gets_no_gradients_and_keeps_its_statistics():
    model = small(freeze_backbone=True).train()
    assert not model.backbone.training and model.classifier.training
    stats = model.backbone.bn1.running_mean.clone()
    model(torch.randn(2, 3, 48, 48))["out"].sum().backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is not None for p in model.classifier.parameters())
    assert torch.equal(model.backbone.bn1.running_mean, stats)
    d = describe(model)
    assert d["trainable_parameters"] == sum(p.numel() for p in model.classifier.parameters())


# --- configuration ---------------------------------------------------------------------------


def test_config_rebuilds_the_same_architecture():
    model = small(
        output_stride=8, multi_grid=(1, 2), extra_blocks=1, decoder=True, aspp_dropout=0.0
    )
    assert describe(model)["aspp_dropout"] == 0.0
    rebuilt = build_model(model.config)
    assert describe(rebuilt) == describe(model)
    rebuilt.load_state_dict(model.state_dict())  # same names, same shapes


@pytest.mark.parametrize(
    "options, message",
    [
        (
            dict(output_stride=12),
            r"output_stride 12 cannot be reached .* choose one of \[8, 16, 32\]",
        ),
        (dict(output_stride=256, extra_blocks=0), "256 cannot be reached with block4"),
        (dict(aspp=False, decoder=True), "decoder=True needs ASPP"),
        (dict(atrous_rates=(6, 0)), "atrous_rates must be a sequence of positive integers"),
        (dict(atrous_rates=(6.5,)), r"atrous_rates. expects a list of int, got \(6.5,\)"),
        (dict(backbone="vgg16"), "unknown backbone 'vgg16'"),
        (dict(extra_blocks=5), r"extra_blocks must be 0\.\.3"),
        (dict(multi_grid=(1, 2)), "one unit rate per layer4 block: resnet50 has 3"),
        (dict(num_classes=0), "num_classes must be a positive integer"),
        (dict(aspp_channels=0), "aspp_channels must be a positive integer"),
        (dict(aspp_dropout=1.0), r"aspp_dropout must be in \[0, 1\)"),
        (dict(backbone_width=0), "backbone_width must be a positive integer"),
        (
            dict(backbone="resnet26", pretrained_backbone=True),
            "no ImageNet weights exist for backbone='resnet26'",
        ),
    ],
)
def test_bad_options_raise_clear_errors(options, message):
    with pytest.raises(ValueError, match=message):
        build_model(**options)


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset 'deeplabv4'"):
        from_preset("deeplabv4")


def test_narrow_backbone_keeps_the_layout_and_scales_the_channels():
    wide, narrow = (
        small(output_stride=8, decoder=True),
        small(output_stride=8, decoder=True, backbone_width=16),
    )
    assert describe(narrow)["dilations"] == describe(wide)["dilations"]
    assert describe(narrow)["backbone_width"] == 16 and describe(wide)["backbone_width"] == 64
    with torch.no_grad():
        features = narrow.eval().backbone(torch.randn(1, 3, 64, 48))
    assert features["low"].shape == (1, 64, 16, 12)  # 4 x width, stride 4
    assert features["out"].shape == (1, 512, 8, 6)  # 32 x width, stride 8
    assert narrow(torch.randn(2, 3, 64, 48))["out"].shape == (2, 21, 64, 48)
    assert describe(narrow)["parameters"] < describe(wide)["parameters"] / 8
    with pytest.raises(ValueError, match="backbone_width=16 has none"):
        build_model(backbone_width=16, pretrained_backbone=True)


# --- another output stride at test time ------------------------------------------------------


def test_an_os16_model_moves_to_os8_with_its_dilations_and_rates_doubled():
    from deeplab_kit.evaluate import at_output_stride

    torch.manual_seed(0)
    os16 = small(backbone_width=16, output_stride=16, multi_grid=(1, 2), atrous_rates=(6, 12, 18))
    os8 = at_output_stride(os16, 8)
    before, after = describe(os16), describe(os8)
    assert after["output_stride"] == 8 and after["atrous_rates"] == (12, 24, 36)
    assert after["dilations"]["layer4"] == tuple(2 * d for d in before["dilations"]["layer4"])
    assert after["dilations"]["layer4"] == (4, 8)  # multi-grid (1, 2) kept, at rate 4
    assert os8.config.multi_grid == (1, 2)
    for name, tensor in os16.state_dict().items():  # the same weights, copied
        assert torch.equal(tensor, os8.state_dict()[name])
    with pytest.raises(ValueError, match="the rates would be"):
        at_output_stride(small(output_stride=8, atrous_rates=(1, 3)), 16)


def test_torchvisions_weights_at_os16_moved_to_os8_match_torchvision(torchvision_pair):
    """torchvision's deeplabv3_resnet50 runs at OS8 with rates (12, 24, 36); the same weights in
    a kit model built at OS16 with rates (6, 12, 18), moved to OS8, give its output."""
    from deeplab_kit.evaluate import at_output_stride

    reference, _ = torchvision_pair
    os16 = build_model(output_stride=16, atrous_rates=(6, 12, 18), aux_loss=True).eval()
    load_torchvision_weights(os16, reference.state_dict())
    os8 = at_output_stride(os16, 8)
    x = torch.randn(1, 3, 65, 49)
    with torch.no_grad():
        expected, got = reference(x), os8(x)
    torch.testing.assert_close(got["out"], expected["out"], atol=1e-4, rtol=0)


# --- the paper's cascaded model: going deeper with atrous convolution -----------------------

CASCADE = dict(backbone="resnet26", backbone_width=8, aspp=False, num_classes=5)


@pytest.mark.parametrize("blocks", [4, 5, 6, 7])
def test_every_reachable_output_stride_gives_the_paper_s_strides_and_rates(blocks):
    """Stages stride until the output stride is reached, then dilate at rates doubling block by
    block (the paper's Table 1: block7 at output stride 256 has no atrous convolution)."""
    extra = blocks - 4
    for output_stride in (8, 16, 32, 64, 128, 256):
        if output_stride > 32 * 2**extra:
            with pytest.raises(ValueError, match=f"block{blocks}"):
                build_model(**CASCADE, extra_blocks=extra, output_stride=output_stride)
            continue
        model = build_model(**CASCADE, extra_blocks=extra, output_stride=output_stride).eval()
        info = describe(model)
        assert info["output_stride"] == output_stride and not info["aspp"]
        with torch.no_grad():
            features = model.backbone(torch.zeros(2, 3, 160, 160))["out"]
            scores = model(torch.zeros(2, 3, 160, 160))["out"]
        side = -(-160 // output_stride)  # ceil
        assert features.shape[-2:] == (side, side)
        assert scores.shape == (2, 5, 160, 160)  # upsampled to the input
        stages = [f"layer{i}" for i in range(2, blocks + 1)]
        striding = [name for name in stages if info["strides"][name][0] == 2]
        assert len(striding) == int(math.log2(output_stride)) - 2  # the stem gives 4
        assert striding == stages[: len(striding)]  # striding first, then dilating
        rate = 1
        for name in stages[len(striding) :]:
            rate *= 2
            last = info["dilations"][name][-1]
            assert last == rate, (output_stride, name)
        if output_stride == 32 * 2**extra:
            assert max(max(d) for d in info["dilations"].values()) == 1  # no atrous at all
        assert receptive_field(model).backbone == receptive_field_from_config(model.config).backbone


def test_the_cascaded_model_s_classifier_is_one_1x1_conv_on_the_last_block():
    model = build_model(**CASCADE, extra_blocks=3, output_stride=16)
    convs = [m for m in model.classifier.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 and convs[0].kernel_size == (1, 1)
    assert convs[0].in_channels == 8 * 8 * 4 and convs[0].out_channels == 5
    assert describe(model)["atrous_rates"] == () and model.classifier.aspp is None
