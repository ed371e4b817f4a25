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

from deeplab_kit.backbone import Backbone, build_backbone, download_state_dict, read_state_dict
from deeplab_kit.config import MODEL_PRESETS, ModelConfig, RunConfig
from deeplab_kit.runtime.checkpoint import CheckpointError, load_checkpoint

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


class DeepLabV3(nn.Module):
    """Backbone, classifier (and optional auxiliary head); logits come back at the input size.

    `forward(images)` returns `{"out": (N, num_classes, H, W)}`, plus `"aux"` with the aux head.
    `config` is the `ModelConfig` it was built from, so a checkpoint can rebuild the model.
    """

    def __init__(
        self,
        backbone: Backbone,
        classifier: nn.Module,
        aux_classifier: nn.Module | None = None,
        *,
        config: ModelConfig,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier
        self.aux_classifier = aux_classifier
        self.config = config
        if config.freeze_backbone:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    @property
    def freeze_backbone(self) -> bool:
        return self.config.freeze_backbone

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


def build_model(config: ModelConfig | None = None, /, **settings) -> DeepLabV3:
    """Build a DeepLabv3 (or, with `decoder=True`, DeepLabv3+) on a dilated ResNet; the settings
    are `deeplab_kit.config.ModelConfig`'s, each with its help text and check there.

        build_model(num_classes=21, backbone="resnet50", output_stride=16, atrous_rates=(6, 12, 18))
        build_model(ModelConfig(...))               # the same from a config
        build_model(config, output_stride=8)        # a config with settings changed
    """
    config = config or ModelConfig()
    if settings:
        config = config.replace(**settings)
    features = build_backbone(config)
    in_channels = features.out_channels  # 2048 at width 64 (512 after layer2)
    aspp = dict(
        atrous_rates=config.atrous_rates,
        channels=config.aspp_channels,
        image_pooling=config.image_pooling,
        dropout=config.aspp_dropout,
    )
    if not config.aspp:
        classifier = PlainHead(in_channels, config.num_classes)
    elif config.decoder:
        low_level = config.backbone_width * tv_resnet.Bottleneck.expansion  # 256 at width 64
        classifier = DeepLabV3PlusHead(in_channels, low_level, config.num_classes, **aspp)
    else:
        classifier = DeepLabHead(in_channels, config.num_classes, **aspp)
    layer3_channels = 4 * config.backbone_width * tv_resnet.Bottleneck.expansion  # 1024 at 64
    aux_classifier = FCNHead(layer3_channels, config.num_classes) if config.aux_loss else None
    return DeepLabV3(features, classifier, aux_classifier, config=config)


def from_preset(name: str, **overrides) -> DeepLabV3:
    """`build_model` with a named configuration of `deeplab_kit.config.MODEL_PRESETS` ("report",
    "paper", "paper-os8", "torchvision")."""
    if name not in MODEL_PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(MODEL_PRESETS)}")
    return build_model(**{**MODEL_PRESETS[name], **overrides})


def model_from_checkpoint(state: dict, path: str | Path) -> DeepLabV3:
    """Rebuild the network of a loaded checkpoint `state` (read from `path`) from the config it
    carries, and load its weights."""
    # The weights come from the checkpoint: no pretrained download to rebuild it.
    built = build_model(RunConfig.from_dict(state["config"]).model, pretrained_backbone=False)
    try:
        built.load_state_dict(state["model"])
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise CheckpointError(f"{path}: its weights do not fit its own config ({first})") from None
    return built


def load_model(path: str | Path, *, device: str | torch.device = "cpu") -> DeepLabV3:
    """The model a checkpoint (or best.pt) holds, rebuilt from its config, in eval mode."""
    return model_from_checkpoint(load_checkpoint(path, map_location="cpu"), path).to(device).eval()


def load_torchvision_weights(
    model: DeepLabV3, weights, *, skip_classifier: bool = False
) -> DeepLabV3:
    """Load a torchvision DeepLabV3 state dict into `model` (in place; returns it).

    `weights`: a state dict, a path to a saved one (for offline machines), or a torchvision
    Weights enum such as `DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1` (downloaded and
    hash-checked). torchvision's model is `from_preset("torchvision")` (OS8, rates 12, 24, 36):
    a state dict stores no dilations, so build the model you mean. Its aux head's tensors are
    ignored when `model` has none; `skip_classifier=True` keeps the model's own last 1x1 convs (a
    new classifier, any number of classes), as in the report's comparison model. A tensor that
    is missing, unexpected or of another shape raises a ValueError naming it.
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
        if (module := getattr(model, head)) is not None:
            last = [n for n, m in module.named_modules() if isinstance(m, nn.Conv2d)][-1]
            names.append(f"{head}.{last}.")
    return tuple(names)


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
        "backbone": model.config.backbone,
        "backbone_width": backbone.conv1.out_channels,
        "num_classes": model.config.num_classes,
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
