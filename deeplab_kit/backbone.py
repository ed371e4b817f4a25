"""The dilated ResNet under DeepLabv3: torchvision's ResNet with its later strides traded for
dilation (output stride 8, 16 or 32), optional multi-grid rates, optional cascaded copies of
block4 (the paper's block5..block7, for its "going deeper" experiment, where the output stride
can go up to 256), narrow widths for CPUs, ImageNet weights.

    features = build_backbone(ModelConfig(output_stride=16, multi_grid=(1, 2, 4)))
    features(images)    # {"low": layer1, "aux": layer3, "out": the last stage}
    stage_plan(ModelConfig(extra_blocks=3))   # every block's (stride, dilation), layer1..layer7

The rule (the paper's Section 3.1): going down the stages, every stage strides by 2 (the
original ResNet) until the output stride is reached; from there on a stage keeps its
resolution and dilates instead, each at twice the previous stage's rate. Layers 2-4 follow
torchvision's `replace_stride_with_dilation` (the first block of a dilated stage keeps the
previous rate), so torchvision's weights behave as trained; in the cascaded copies every block
takes its stage's rate, times its multi-grid unit rate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet as tv_resnet

from deeplab_kit.config import BACKBONE_BLOCKS, ModelConfig

IMAGENET_WEIGHTS = {
    "resnet50": tv_resnet.ResNet50_Weights.IMAGENET1K_V1,
    "resnet101": tv_resnet.ResNet101_Weights.IMAGENET1K_V1,
}
STEM_STRIDE = 4  # conv1 and the max pool


def stage_plan(model: ModelConfig) -> list[tuple[str, list[tuple[int, int]]]]:
    """(stage name, [(stride, dilation) of each block's 3x3 conv]) for layer1..layer(4 + extra),
    or layer1..layer`backbone_stages` for a backbone cut short (a small receptive field).

    Multi-grid (unit rates, one per block of block4) multiplies the stage rate of layer4 and
    of every cascaded block, block by block.
    """
    blocks = BACKBONE_BLOCKS[model.backbone]
    counts = (*blocks, *(blocks[3],) * model.extra_blocks)[
        : model.backbone_stages + model.extra_blocks
    ]
    plan = [("layer1", [(1, 1)] * counts[0])]
    stride, rate = STEM_STRIDE, 1
    for index, count in enumerate(counts[1:], start=2):
        previous = rate
        if stride < model.output_stride:  # this stage still strides
            stride *= 2
            units = [(2, rate)] + [(1, rate)] * (count - 1)
        elif model.dilated:  # it keeps the resolution and dilates, at twice the previous rate
            rate *= 2
            first = previous if index <= 4 else rate  # torchvision's rule in layer2..layer4
            units = [(1, first)] + [(1, rate)] * (count - 1)
        else:  # it keeps the resolution without dilating: the field grows as in a plain ResNet
            units = [(1, 1)] * count
        if index >= 4 and model.multi_grid is not None:
            units = [
                (step, rate * unit) for (step, _), unit in zip(units, model.multi_grid, strict=True)
            ]
        plan.append((f"layer{index}", units))
    return plan


class Backbone(nn.Module):
    """A ResNet without its pooling and fc layers, returning the features the heads need.

    The attribute names are torchvision's ResNet's, so its state dicts load unchanged. Extra
    cascaded blocks (the paper's block5..block7) are `layer5`, `layer6`, `layer7`.
    """

    def __init__(
        self, resnet: tv_resnet.ResNet, extra_layers: Sequence[nn.Module] = (), stages: int = 4
    ) -> None:
        super().__init__()
        for name in ("conv1", "bn1", "relu", "maxpool"):
            self.add_module(name, getattr(resnet, name))
        for index in range(1, stages + 1):  # a backbone cut short keeps layer1..layer`stages`
            self.add_module(f"layer{index}", getattr(resnet, f"layer{index}"))
        for index, layer in enumerate(extra_layers, start=5):
            self.add_module(f"layer{index}", layer)
        self.num_stages = stages + len(extra_layers)
        self.out_channels = self.stages()[-1][1][
            -1
        ].conv3.out_channels  # 2048 at width 64 with layer4

    def stages(self) -> list[tuple[str, nn.Sequential]]:
        """(name, stage) for layer1, layer2, ... in order."""
        return [(f"layer{i}", getattr(self, f"layer{i}")) for i in range(1, self.num_stages + 1)]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (N, 64, H/4, W/4)
        features = {}
        for name, stage in self.stages():
            # layer1 (N, 256, H/4, W/4), layer2 (N, 512, H/8, W/8), layer3 (N, 1024, H/8 or
            # H/16), layer4 (N, 2048, H/OS, W/OS); cascaded blocks keep 2048 channels
            x = stage(x)
            if name == "layer1":
                features["low"] = x  # the decoder's input
            elif name == "layer3":
                features["aux"] = x  # the aux head's input
        features["out"] = x
        return features


def build_backbone(model: ModelConfig) -> Backbone:
    """The backbone `model` describes. A backbone cut short is built whole and loses its later
    stages (the weights of the stages it keeps are as the whole one's)."""
    blocks = BACKBONE_BLOCKS[model.backbone]
    plan = stage_plan(model.replace(backbone_stages=4))  # a backbone cut short is built whole
    dilate = [units[0][0] == 1 for _, units in plan[1:4]]  # layer2..layer4 that do not stride
    resnet = tv_resnet.ResNet(
        tv_resnet.Bottleneck, list(blocks), replace_stride_with_dilation=dilate
    )
    if model.backbone_width != 64:
        _make_narrow(resnet, model.backbone_width, blocks, dilate)
    if model.pretrained_backbone is not False:
        _load_backbone_weights(resnet, model.backbone, model.pretrained_backbone)
    for (_, units), stage in zip(
        plan[1:4], (resnet.layer2, resnet.layer3, resnet.layer4), strict=True
    ):
        for block, (_, rate) in zip(stage, units, strict=True):  # multi-grid, or no dilation
            block.conv2.dilation = block.conv2.padding = (rate, rate)  # the padding keeps the size
    extra = [_extra_layer(units, model.backbone_width) for _, units in plan[4:]]
    return Backbone(resnet, extra, model.backbone_stages)


def _init_like_resnet(module: nn.Module) -> None:
    """The initialisation torchvision's ResNet gives its layers."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _extra_layer(units: Sequence[tuple[int, int]], width: int) -> nn.Sequential:
    """One cascaded copy of block4 (the same channels in and out): bottlenecks with the plan's
    (stride, dilation); a striding first block gets a 1x1 stride-2 shortcut, as in ResNet."""
    channels = 8 * width * tv_resnet.Bottleneck.expansion  # 2048 at width 64
    blocks = []
    for stride, dilation in units:
        shortcut = None
        if stride != 1:
            shortcut = nn.Sequential(
                nn.Conv2d(channels, channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(channels),
            )
        blocks.append(
            tv_resnet.Bottleneck(
                channels, 8 * width, stride=stride, downsample=shortcut, dilation=dilation
            )
        )
    layer = nn.Sequential(*blocks)
    _init_like_resnet(layer)
    return layer


def _make_narrow(
    resnet: tv_resnet.ResNet, width: int, blocks: Sequence[int], dilate: list[bool]
) -> None:
    """Rebuild the stem and stages `width` wide instead of 64, in place, with torchvision's own
    stage builder, so strides, dilations and initialisation follow the same rules."""
    resnet.inplanes, resnet.dilation = width, 1
    resnet.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
    resnet.bn1 = nn.BatchNorm2d(width)
    resnet.layer1 = resnet._make_layer(tv_resnet.Bottleneck, width, blocks[0])
    for index, (num_blocks, dilated) in enumerate(zip(blocks[1:], dilate, strict=True), start=2):
        stage = resnet._make_layer(
            tv_resnet.Bottleneck, width * 2 ** (index - 1), num_blocks, stride=2, dilate=dilated
        )
        setattr(resnet, f"layer{index}", stage)
    _init_like_resnet(resnet)


def _load_backbone_weights(resnet: tv_resnet.ResNet, backbone: str, pretrained) -> None:
    if pretrained is True:
        if backbone not in IMAGENET_WEIGHTS:
            raise ValueError(
                f"no ImageNet weights exist for backbone={backbone!r}; "
                f"pretrained_backbone=True needs one of {sorted(IMAGENET_WEIGHTS)}"
            )
        state = download_state_dict(IMAGENET_WEIGHTS[backbone])
    else:
        state = read_state_dict(Path(pretrained))
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = resnet.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        first = (missing or unexpected)[0]
        raise ValueError(
            f"the backbone weights do not fit a {backbone}: "
            f"{'missing' if missing else 'unexpected'} tensor {first!r}"
        )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, corrupt, or holding objects weights_only refuses
        raise ValueError(
            f"{path}: not a readable state dict ({type(error).__name__}: {error})"
        ) from None
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise ValueError(
            f"{path}: expected a state dict (names -> tensors), found {type(state).__name__}"
        )
    return dict(state)


def download_state_dict(weights) -> dict[str, torch.Tensor]:
    """torchvision's download (hash-checked), with a message that helps when it cannot run."""
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except (OSError, RuntimeError) as error:  # URLError is an OSError; a bad hash a RuntimeError
        filename = weights.url.rsplit("/", 1)[-1]
        raise RuntimeError(
            f"could not get {weights} from {weights.url} ({type(error).__name__}: {error}).\n"
            f"Offline? Download {filename} on a machine with network access, copy it here and "
            f"pass its path instead (torchvision caches it under ~/.cache/torch/hub/checkpoints/)."
        ) from None
