"""DeepLabv3 (Chen et al. 2017): a dilated ResNet, atrous spatial pyramid pooling, a small head.

Read top to bottom: the ASPP branches, the ASPP module, the heads, the model, and `build_model`,
which wires them to a dilated ResNet (`deeplab_kit.backbone`) for a given output stride,
multi-grid and set of rates.

The parameter names follow torchvision's `deeplabv3_resnet50` (`backbone.*`, `classifier.*`,
`aux_classifier.*`), so its pretrained weights load without renaming: see
`load_torchvision_weights`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models import resnet as tv_resnet

from deeplab_kit.backbone import (
    BACKBONE_BLOCKS,
    MAX_EXTRA_BLOCKS,
    Backbone,
    build_backbone,
    check_output_stride,
    download_state_dict,
    read_state_dict,
)
from deeplab_kit.training.config import MODEL_PRESETS

# --- ASPP ------------------------------------------------------------------------------------


class ASPPConv(nn.Sequential):
    """One atrous branch: a 3x3 convolution whose taps are `rate` pixels apart, BN, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, rate: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=rate, dilation=rate, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class ASPPPooling(nn.Sequential):
    """Image-level features: average the whole map, 1x1 conv, BN, ReLU, spread back over the map.

    The paper adds this branch because a 3x3 filter with a rate close to the map's size sees
    mostly padding: only its centre tap stays inside, so it degenerates to a 1x1 filter.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = super().forward(x)  # (N, C, 1, 1)
        return pooled.expand(-1, -1, *x.shape[-2:])  # (N, C, h, w): bilinear from 1x1 is a copy


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: parallel branches over one feature map, concatenated.

    Branches: a 1x1 conv, one 3x3 atrous conv per rate and (optionally) image-level pooling,
    each with `out_channels` channels; then a 1x1 projection back to `out_channels`.
    """

    def __init__(
        self,
        in_channels: int,
        atrous_rates: Sequence[int],
        out_channels: int = 256,
        image_pooling: bool = True,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        branches: list[nn.Module] = [
            nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
            )
        ]
        branches += [ASPPConv(in_channels, out_channels, rate) for rate in atrous_rates]
        if image_pooling:
            branches.append(ASPPPooling(in_channels, out_channels))
        self.convs = nn.ModuleList(branches)
        self.rates = tuple(atrous_rates)  # one 3x3 branch per rate, in order
        self.image_pooling = image_pooling
        self.out_channels = out_channels
        self.dropout = dropout  # the rate of the projection's dropout
        self.project = nn.Sequential(
            nn.Conv2d(len(branches) * out_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C_in, h, w) -> (N, C_out, h, w)
        return self.project(torch.cat([branch(x) for branch in self.convs], dim=1))


# --- heads -----------------------------------------------------------------------------------


# Every head takes the backbone's features ({"low", "aux", "out"}) and returns class scores at
# the output stride; `aspp` is its ASPP module (None for the cascaded model's plain head).


class DeepLabHead(nn.Sequential):
    """DeepLabv3's classifier: ASPP, a 3x3 conv, BN, ReLU, and a 1x1 conv to class scores.
    (A Sequential, so its parameter names are torchvision's: classifier.0 is ASPP.)"""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        atrous_rates: Sequence[int],
        channels: int = 256,
        image_pooling: bool = True,
        dropout: float = 0.5,
    ) -> None:
        super().__init__(
            ASPP(in_channels, atrous_rates, channels, image_pooling, dropout),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, num_classes, 1),
        )

    @property
    def aspp(self) -> ASPP:
        return self[0]

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return super().forward(features["out"])  # (N, classes, H/OS, W/OS)


class DeepLabV3PlusHead(nn.Module):
    """DeepLabv3+'s decoder (Chen et al. 2018): ASPP features upsampled to layer1's stride 4,
    joined with layer1's features projected to 48 channels, refined by two 3x3 convs."""

    def __init__(
        self,
        in_channels: int,
        low_level_channels: int,
        num_classes: int,
        atrous_rates: Sequence[int],
        channels: int = 256,
        image_pooling: bool = True,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.aspp = ASPP(in_channels, atrous_rates, channels, image_pooling, dropout)
        self.low_level = nn.Sequential(
            nn.Conv2d(low_level_channels, 48, 1, bias=False),
            nn.BatchNorm2d(48),
            nn.ReLU(inplace=True),
        )
        self.fuse = nn.Sequential(
            nn.Conv2d(channels + 48, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )
        self.classify = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        low = features["low"]
        x = self.aspp(features["out"])  # (N, 256, H/OS, W/OS)
        x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)
        x = torch.cat([x, self.low_level(low)], dim=1)  # (N, 256 + 48, H/4, W/4)
        return self.classify(self.fuse(x))  # (N, classes, H/4, W/4)


class PlainHead(nn.Module):
    """The cascaded model's classifier (the paper's "going deeper" experiment, Tables 1-2, has
    no ASPP): a 1x1 convolution turns the last block's features into class scores at the
    output stride; the model then upsamples them bilinearly to the input size, as the paper
    upsamples its final logits. The paper does not spell this layer out; a 1x1 convolution is
    the least a classifier can be (DeepLab v1/v2 end the same way)."""

    aspp = None

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.classify = nn.Conv2d(in_channels, num_classes, 1)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.classify(features["out"])  # (N, classes, H/OS, W/OS)


class FCNHead(nn.Sequential):
    """The auxiliary head on layer3 (as torchvision has it): a deep-supervision loss in training."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        inter = in_channels // 4
        super().__init__(
            nn.Conv2d(in_channels, inter, 3, padding=1, bias=False),
            nn.BatchNorm2d(inter),
            nn.ReLU(inplace=True),
            nn.Dropout(0.1),
            nn.Conv2d(inter, num_classes, 1),
        )


# --- the model -------------------------------------------------------------------------------


class DeepLabV3(nn.Module):
    """Backbone, classifier (and optional auxiliary head); logits come back at the input size.

    `forward(images)` returns `{"out": (N, num_classes, H, W)}`, plus `"aux"` with the aux head.
    `config` holds the `build_model` arguments, so a checkpoint can rebuild the model.
    """

    def __init__(
        self,
        backbone: Backbone,
        classifier: nn.Module,
        aux_classifier: nn.Module | None = None,
        *,
        freeze_backbone: bool = False,
        config: dict | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier
        self.aux_classifier = aux_classifier
        self.config = dict(config or {})
        self.freeze_backbone = freeze_backbone
        if freeze_backbone:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    def train(self, mode: bool = True) -> DeepLabV3:
        super().train(mode)
        if self.freeze_backbone:  # a frozen backbone keeps its BN statistics too
            self.backbone.eval()
        return self

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        size = x.shape[-2:]
        features = self.backbone(x)
        logits = self.classifier(features)  # (N, classes, H/OS or H/4, ...)
        result = {"out": F.interpolate(logits, size=size, mode="bilinear", align_corners=False)}
        if self.aux_classifier is not None:
            aux = self.aux_classifier(features["aux"])
            result["aux"] = F.interpolate(aux, size=size, mode="bilinear", align_corners=False)
        return result


# --- building --------------------------------------------------------------------------------


def check_rates(
    name: str, values, *, allow_none: bool, allow_empty: bool = False
) -> tuple[int, ...] | None:
    if values is None and allow_none:
        return None
    kind = "a sequence" if allow_empty else "a non-empty sequence"
    try:
        raw = tuple(values)
        rates = tuple(int(v) for v in raw)
    except (TypeError, ValueError):
        rates, raw = (), None
    if (not rates and not allow_empty) or any(r < 1 for r in rates) or rates != raw:
        # (6.5 -> 6 would be a silent change)
        raise ValueError(f"{name} must be {kind} of positive integers, got {values!r}")
    return rates


def _check_arguments(
    backbone,
    output_stride,
    num_classes,
    backbone_width,
    pretrained_backbone,
    aspp_dropout,
    aspp_channels,
    extra_blocks,
) -> None:
    """`build_model`'s scalar arguments, each refused with its name and value when wrong."""
    if backbone not in BACKBONE_BLOCKS:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {sorted(BACKBONE_BLOCKS)}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if not isinstance(backbone_width, int) or backbone_width < 1:
        raise ValueError(f"backbone_width must be a positive integer, got {backbone_width!r}")
    if backbone_width != 64 and pretrained_backbone is not False:
        raise ValueError(
            f"pretrained backbones are 64 wide; backbone_width={backbone_width} has none"
        )
    if not 0.0 <= aspp_dropout < 1.0:
        raise ValueError(f"aspp_dropout must be in [0, 1), got {aspp_dropout!r}")
    if not isinstance(aspp_channels, int) or aspp_channels < 1:
        raise ValueError(f"aspp_channels must be a positive integer, got {aspp_channels!r}")
    if not isinstance(extra_blocks, int) or not 0 <= extra_blocks <= MAX_EXTRA_BLOCKS:
        raise ValueError(
            f"extra_blocks must be 0..{MAX_EXTRA_BLOCKS} (block5..block7), got {extra_blocks!r}"
        )


def build_model(
    *,
    num_classes: int = 21,
    backbone: str = "resnet50",
    output_stride: int = 16,
    atrous_rates: Sequence[int] = (6, 12, 18),
    multi_grid: Sequence[int] | None = None,
    extra_blocks: int = 0,
    backbone_stages: int = 4,
    aspp: bool = True,
    image_pooling: bool = True,
    aux_loss: bool = False,
    decoder: bool = False,
    aspp_channels: int = 256,
    backbone_width: int = 64,
    aspp_dropout: float = 0.5,
    pretrained_backbone: bool | str | Path = False,
    freeze_backbone: bool = False,
) -> DeepLabV3:
    """Build a DeepLabv3 (or, with `decoder=True`, DeepLabv3+) on a dilated ResNet.

    Args:
        num_classes: classes to score, background included (21 for PASCAL VOC).
        backbone: "resnet50", "resnet101", or "resnet26" (bottleneck stages (2, 2, 2, 2), for CPUs).
        output_stride: input size / feature size: 8, 16 or 32, and with cascaded blocks up to
            32 x 2^extra_blocks (256 with block7). Stages stride until it is reached and dilate
            after, each at twice the previous rate (`backbone.stage_plan`); in layer2..layer4
            the first block of a dilated stage keeps the previous stage's rate, as torchvision
            has it (at OS8 layer4's rates are 2, 4, 4).
        atrous_rates: one 3x3 ASPP branch per rate; () leaves ASPP its 1x1 branch (and image
            pooling), the control of the rate ablation.
        multi_grid: None keeps torchvision's dilations (its pretrained weights behave as trained);
            a tuple gives layer4's blocks the paper's rates: stage rate x unit rate, e.g. (1, 2, 4)
            gives (2, 4, 8) at OS16 and (4, 8, 16) at OS8. It needs one unit rate per layer4 block.
        extra_blocks: 0..3 cascaded copies of block4 (the paper's block5..block7), for the
            paper's "going deeper" experiment: each strides like the ResNet's stages until the
            output stride is reached, and dilates at twice the previous rate after.
        backbone_stages: 4 keeps every ResNet stage; 3 or 2 cut the backbone after layer3 or
            layer2 (output stride 8 after layer2): a backbone with a small receptive field, so
            that the context has to come from ASPP (the rate ablation's small-field arm).
        aspp: False gives the cascaded model of the paper's Tables 1-2: no ASPP, a 1x1
            convolution on the last block (`PlainHead`); the ASPP arguments are then unused.
        image_pooling: keep ASPP's image-level branch.
        aux_loss: add torchvision's FCN auxiliary head on layer3 (output key "aux").
        decoder: use the DeepLabv3+ decoder (layer1 features at stride 4) as the classifier.
        aspp_channels: width of every ASPP branch and of the head (256 in the paper).
        backbone_width: channels of the stem and the first stage (64 in torchvision's ResNets,
            whose stages then have 256, 512, 1024 and 2048 output channels); smaller values
            make a CPU-sized backbone, e.g. 16 for the demo. Only 64 has pretrained weights.
        aspp_dropout: dropout after ASPP's projection (0.5 as in torchvision; 0 trains faster
            in very short runs such as the demo).
        pretrained_backbone: False, True (ImageNet weights from torchvision, downloaded), or a
            path to a saved torchvision ResNet state dict (for offline machines).
        freeze_backbone: no gradients for the backbone, which also stays in eval mode.

    Returns:
        A `DeepLabV3` whose forward returns {"out": (N, num_classes, H, W)} at the input size.
    """
    _check_arguments(
        backbone,
        output_stride,
        num_classes,
        backbone_width,
        pretrained_backbone,
        aspp_dropout,
        aspp_channels,
        extra_blocks,
    )
    if backbone_stages not in (2, 3, 4):
        raise ValueError(f"backbone_stages must be 2, 3 or 4, got {backbone_stages!r}")
    if backbone_stages < 4 and (extra_blocks or multi_grid is not None):
        raise ValueError("a backbone cut short has no layer4: extra_blocks and multi_grid need it")
    if backbone_stages < 3 and aux_loss:
        raise ValueError("aux_loss needs layer3, which backbone_stages=2 cuts off")
    check_output_stride(output_stride, extra_blocks, backbone_stages)
    atrous_rates = check_rates("atrous_rates", atrous_rates, allow_none=False, allow_empty=True)
    if not aspp and decoder:
        raise ValueError("decoder=True needs ASPP: the DeepLabv3+ decoder joins ASPP's features")
    multi_grid = check_rates("multi_grid", multi_grid, allow_none=True)
    blocks = BACKBONE_BLOCKS[backbone]
    if multi_grid is not None and len(multi_grid) != blocks[3]:
        raise ValueError(
            f"multi_grid needs one unit rate per layer4 block: {backbone} has {blocks[3]}, "
            f"got {multi_grid}"
        )

    features = build_backbone(
        backbone,
        output_stride,
        multi_grid,
        extra_blocks,
        backbone_width,
        pretrained_backbone,
        backbone_stages,
    )
    in_channels = features.out_channels  # 2048 at width 64 (512 after layer2)
    if not aspp:
        classifier = PlainHead(in_channels, num_classes)
    elif decoder:
        classifier = DeepLabV3PlusHead(
            in_channels,
            backbone_width * tv_resnet.Bottleneck.expansion,  # layer1's output: 256 at width 64
            num_classes,
            atrous_rates,
            aspp_channels,
            image_pooling,
            aspp_dropout,
        )
    else:
        classifier = DeepLabHead(
            in_channels, num_classes, atrous_rates, aspp_channels, image_pooling, aspp_dropout
        )
    layer3_channels = 4 * backbone_width * tv_resnet.Bottleneck.expansion  # 1024 at width 64
    aux_classifier = FCNHead(layer3_channels, num_classes) if aux_loss else None

    config = dict(
        num_classes=num_classes,
        backbone=backbone,
        output_stride=output_stride,
        atrous_rates=atrous_rates,
        multi_grid=multi_grid,
        extra_blocks=extra_blocks,
        backbone_stages=backbone_stages,
        aspp=aspp,
        image_pooling=image_pooling,
        aux_loss=aux_loss,
        decoder=decoder,
        aspp_channels=aspp_channels,
        backbone_width=backbone_width,
        aspp_dropout=aspp_dropout,
        freeze_backbone=freeze_backbone,
    )
    return DeepLabV3(
        features,
        classifier,
        aux_classifier,
        freeze_backbone=freeze_backbone,
        config=config,
    )


def from_preset(name: str, **overrides) -> DeepLabV3:
    """`build_model` with a named configuration of `deeplab_kit.training.config.MODEL_PRESETS` ("report",
    "paper", "paper-os8", "torchvision")."""

    if name not in MODEL_PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(MODEL_PRESETS)}")
    return build_model(**{**MODEL_PRESETS[name], **overrides})


# --- torchvision weights ---------------------------------------------------------------------


def load_torchvision_weights(
    model: DeepLabV3, weights, *, skip_classifier: bool = False
) -> DeepLabV3:
    """Load a torchvision DeepLabV3 state dict into `model` (in place; returns it).

    `weights` is a state dict, a path to a saved one (for offline machines), or a torchvision
    Weights enum such as `DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1` (downloaded and
    hash-checked by torchvision). torchvision's model is `from_preset("torchvision")`: output
    stride 8 and rates (12, 24, 36); dilations are not stored in a state dict, so build the
    model you mean. Tensors of torchvision's aux head are ignored when `model` has none.
    `skip_classifier=True` keeps the model's own last 1x1 convs (a new classifier, any number
    of classes), as in the report's comparison model.
    A tensor that is missing, unexpected or of another shape raises a ValueError naming it.
    """
    if isinstance(weights, (str, Path)):
        state = read_state_dict(Path(weights))
    elif isinstance(weights, Mapping):
        state = dict(weights)
    elif hasattr(weights, "get_state_dict"):
        state = download_state_dict(weights)
    else:
        raise TypeError(
            f"weights must be a state dict, a path or a torchvision Weights enum, got {type(weights).__name__}"
        )

    skip = _last_conv_prefixes(model) if skip_classifier else ()  # str.startswith(()) is False
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(skip)}
    state = {k: v for k, v in state.items() if not k.startswith(skip)}
    if model.aux_classifier is None:
        state = {k: v for k, v in state.items() if not k.startswith("aux_classifier.")}
    for name, tensor in own.items():
        if name not in state:
            raise ValueError(
                f"the weights lack tensor {name!r} {tuple(tensor.shape)}: they were saved from another configuration"
            )
        if state[name].shape != tensor.shape:
            raise ValueError(
                f"tensor {name!r} does not fit: the weights have shape {tuple(state[name].shape)}, "
                f"the model {tuple(tensor.shape)} (check num_classes, backbone, aspp_channels, decoder)"
            )
    unexpected = [k for k in state if k not in own]
    if unexpected:
        raise ValueError(
            f"the weights hold tensor {unexpected[0]!r}, which this model does not have"
        )
    model.load_state_dict(state, strict=not skip)
    return model


def _last_conv_prefixes(model: DeepLabV3) -> tuple[str, ...]:
    """Names of the final 1x1 convs (the ones that depend on the number of classes)."""
    names = []
    for head in ("classifier", "aux_classifier"):
        module = getattr(model, head)
        if module is None:
            continue
        last = [n for n, m in module.named_modules() if isinstance(m, nn.Conv2d)][-1]
        names.append(f"{head}.{last}.")
    return tuple(names)


# --- inspection ------------------------------------------------------------------------------


def aspp_of(model: DeepLabV3) -> ASPP | None:
    """The model's ASPP module, whichever head holds it (None for the cascaded model)."""
    return model.classifier.aspp


def aspp_rates(aspp: ASPP | None) -> tuple[int, ...]:
    """The rates of an ASPP module's 3x3 branches, read from their convolutions."""
    if aspp is None:
        return ()
    return tuple(branch[0].dilation[0] for branch in aspp.convs if isinstance(branch, ASPPConv))


def describe(model: DeepLabV3) -> dict:
    """What the model is, read from its modules: size, output stride, every stage's strides and
    dilations, and ASPP's rates (none for the cascaded model)."""
    backbone = model.backbone
    stride = backbone.conv1.stride[0] * backbone.maxpool.stride  # the stem: 4
    strides, dilations = {}, {}
    for name, stage in backbone.stages():
        strides[name] = tuple(block.conv2.stride[0] for block in stage)
        dilations[name] = tuple(block.conv2.dilation[0] for block in stage)
        stride *= strides[name][0]
    aspp = aspp_of(model)
    return {
        "backbone": model.config.get("backbone"),
        "backbone_width": backbone.conv1.out_channels,
        "num_classes": model.config.get("num_classes"),
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "output_stride": stride,
        "strides": strides,
        "dilations": dilations,
        "aspp": aspp is not None,
        "atrous_rates": aspp_rates(aspp),
        "image_pooling": aspp is not None and any(isinstance(b, ASPPPooling) for b in aspp.convs),
        "aspp_channels": aspp.out_channels if aspp is not None else None,
        "aspp_dropout": aspp.dropout if aspp is not None else None,
        "aux_head": model.aux_classifier is not None,
        "decoder": isinstance(model.classifier, DeepLabV3PlusHead),
        "frozen_backbone": model.freeze_backbone,
    }
