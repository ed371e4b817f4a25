import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from deeplab_kit.data.classes import VOC_PALETTE
from deeplab_kit.data.transforms import normalize
from deeplab_kit.evaluate import evaluate
from deeplab_kit.runtime.arithmetic import FP32, Arithmetic

CPU = torch.device("cpu")


# --- toy models whose answers are known ---------------------------------------------------------


def coord_logits(u, x):
    """(N, 3, H, W): a fixed function of the x-coordinate u in 0..1 plus a term from the image."""
    base = torch.stack([torch.zeros_like(u), 4 * (u - 0.4), 3 * (0.3 - u)])  # (3, W)
    content = x[:, :1] * torch.tensor([0.0, 1.5, -1.5]).view(1, 3, 1, 1)  # (N, 3, H, W)
    return base[None, :, None, :] + content


class CoordModel(nn.Module):
    """Logits depend on where a pixel sits along x, so flipping changes them predictably."""

    def __init__(self):
        super().__init__()
        self.seen = []  # what each forward pass saw

    def forward(self, x):
        self.seen.append(
            {
                "training": self.training,
                "inference_mode": torch.is_inference_mode_enabled(),
                "autocast": torch.is_autocast_enabled("cpu"),
                "autocast_dtype": torch.get_autocast_dtype("cpu"),
                "channels_last": x.is_contiguous(memory_format=torch.channels_last),
            }
        )
        u = (torch.arange(x.shape[-1], dtype=torch.float32) + 0.5) / x.shape[-1]  # pixel centres
        return {"out": coord_logits(u, x.float())}


class SizeModel(nn.Module):
    """Two classes, constant over the image; class 1's logit grows with the input width."""

    def __init__(self, reference_width, k=4.0, c=1.1):
        super().__init__()
        self.reference_width, self.k, self.c = reference_width, k, c

    def forward(self, x):
        n, _, h, w = x.shape
        logit1 = self.k * (w / self.reference_width - self.c)
        out = torch.zeros(n, 2, h, w)
        out[:, 1] = logit1
        return {"out": out}


class LocalModel(nn.Module):
    """One 3x3 convolution that mostly reads the pixel's own colour (one-hot of its class)."""

    def __init__(self, num_classes=3, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, num_classes, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(0.2 * torch.randn(self.conv.weight.shape, generator=g))
            self.conv.weight[:, :, 1, 1] += 5 * torch.eye(num_classes, 3)
            self.conv.bias.zero_()

    def forward(self, x):
        return {"out": self.conv(x)}


# --- a tiny VOC-like dataset with images of different sizes, and a padding collate -----------


def blocky_sample(height, width, block, seed, void_border=0, noise=0.0):
    """Image = one-hot colour of a block-wise random label map; mask = labels, void near edges."""
    g = torch.Generator().manual_seed(seed)
    grid = torch.randint(0, 3, (-(-height // block), -(-width // block)), generator=g)
    labels = grid.repeat_interleave(block, 0).repeat_interleave(block, 1)[:height, :width]
    image = F.one_hot(labels, 3).permute(2, 0, 1).float()  # (3, H, W)
    image += noise * torch.randn(image.shape, generator=g)
    mask = labels.clone()
    if void_border:
        edges = torch.zeros(height, width, dtype=torch.bool)
        edges[:, 1:] |= labels[:, 1:] != labels[:, :-1]
        edges[1:] |= labels[1:] != labels[:-1]
        near = F.max_pool2d(edges[None, None].float(), 2 * void_border + 1, 1, void_border)[0, 0]
        mask[near > 0] = 255
    return image, mask


class ToyVOC(Dataset):
    def __init__(self, sizes, block=4, noise=0.0, void_last_row=False):
        self.samples = [
            blocky_sample(h, w, block, seed=i, noise=noise) for i, (h, w) in enumerate(sizes)
        ]
        if void_last_row:  # void at the image's own border must not be taken for padding
            self.samples[0][1][-1] = 255
        self.ids = [f"2007_{i:06d}" for i in range(len(sizes))]

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]


def pad_collate(batch):
    """Pad to the largest image in the batch: image 0, mask 255 at the bottom and right."""
    height = max(image.shape[1] for image, _ in batch)
    width = max(image.shape[2] for image, _ in batch)
    images = torch.zeros(len(batch), 3, height, width)
    masks = torch.full((len(batch), height, width), 255, dtype=torch.long)
    for i, (image, mask) in enumerate(batch):
        images[i, :, : image.shape[1], : image.shape[2]] = image
        masks[i, : mask.shape[0], : mask.shape[1]] = mask
    return images, masks


SIZES = [(20, 24), (16, 16), (24, 20)]


# --- multi-scale and flip --------------------------------------------------------------------


def test_flip_averages_probabilities_of_the_mirrored_view():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 6, 24, generator=g)
    u = (torch.arange(24) + 0.5) / 24
    plain = coord_logits(u, x).softmax(1)
    mirrored = coord_logits(1 - u, x).softmax(1)  # model(flip(x)) flipped back
    expected = (plain + mirrored) / 2
    top2 = expected.topk(2, dim=1).values
    assert (top2[:, 0] - top2[:, 1]).min() > 1e-4  # no near-ties to blur the comparison
    labels = expected.argmax(1)
    assert (labels != plain.argmax(1)).any()  # flipping changes the answer here
    wrong = (plain + coord_logits(1 - u, x.flip(-1)).softmax(1)) / 2  # forgot to flip the input
    assert (labels != wrong.argmax(1)).any()

    loader = [(x, labels)]
    flipped = evaluate(CoordModel(), loader, device=CPU, num_classes=3, flip=True, arithmetic=FP32)
    assert flipped.scores["pixel_accuracy"] == 1.0
    single = evaluate(CoordModel(), loader, device=CPU, num_classes=3, arithmetic=FP32)
    assert single.scores["pixel_accuracy"] < 1.0


def test_multi_scale_averages_probabilities_over_scales():
    width, scales = 32, (1.0, 1.5, 1.75)
    model = SizeModel(reference_width=width)
    # p(class 1) at each scale: the model sees int(width * s) columns
    p1 = torch.tensor(
        [torch.sigmoid(torch.tensor(4.0 * (int(width * s) / width - 1.1))) for s in scales]
    )
    assert p1[0] < 0.5 < p1.mean()  # one scale says 0, the average says 1
    x = torch.rand(2, 3, 8, width)
    target = torch.ones(2, 8, width, dtype=torch.long)
    ce = nn.CrossEntropyLoss(ignore_index=255)
    multi = evaluate(model, [(x, target)], device=CPU, num_classes=2, scales=scales, criterion=ce)
    assert multi.scores["pixel_accuracy"] == 1.0
    assert multi.loss == pytest.approx(-torch.log(p1.mean()).item(), rel=1e-5)
    single = evaluate(model, [(x, target)], device=CPU, num_classes=2, criterion=ce)
    assert single.scores["pixel_accuracy"] == 0.0
    assert single.loss == pytest.approx(-torch.log(p1[0]).item(), rel=1e-5)


def test_scale_equivariant_model_keeps_its_answer_across_scales_and_flip():
    # A per-pixel model on an image of 16-pixel blocks: every scale agrees away from the edges,
    # which are void (as VOC marks its object borders).
    image, mask = blocky_sample(64, 64, block=16, seed=3, void_border=3)
    model = LocalModel()
    with torch.no_grad():
        model.conv.weight.zero_()
        model.conv.weight[:, :, 1, 1] = torch.eye(3)
    result = evaluate(
        model,
        [(image[None], mask[None])],
        device=CPU,
        num_classes=3,
        scales=(0.5, 0.75, 1.0, 1.25, 1.5, 1.75),
        flip=True,
        arithmetic=FP32,
    )
    assert result.scores["pixel_accuracy"] == 1.0
    assert result.confusion.matrix.sum() == (mask != 255).sum()


# --- padded batches, loss, export ------------------------------------------------------------


def test_padded_batches_score_like_single_images():
    ds = ToyVOC(SIZES, noise=0.8)
    model = LocalModel()
    padded = DataLoader(ds, batch_size=3, collate_fn=pad_collate)
    batched = evaluate(model, padded, device=CPU, num_classes=3, arithmetic=FP32)
    single = evaluate(
        model, DataLoader(ds, batch_size=1), device=CPU, num_classes=3, arithmetic=FP32
    )
    assert torch.equal(batched.confusion.matrix, single.confusion.matrix)
    assert batched.confusion.matrix.sum() == sum(h * w for h, w in SIZES)
    assert 0.5 < batched.scores["pixel_accuracy"] < 1.0  # the noise makes it imperfect


def test_loss_is_the_mean_over_valid_pixels():
    ds = ToyVOC(SIZES, noise=1.0)
    model = LocalModel()
    ds.samples[1][1][:4] = 255  # some void inside an image
    loader = DataLoader(ds, batch_size=2, collate_fn=pad_collate)  # batches of 2 and 1 images
    ce = nn.CrossEntropyLoss(ignore_index=255)
    result = evaluate(model, loader, device=CPU, num_classes=3, criterion=ce, arithmetic=FP32)
    with torch.no_grad():
        total = sum(
            F.cross_entropy(
                model(image[None])["out"], mask[None], ignore_index=255, reduction="sum"
            )
            for image, mask in ds
        )
    count = sum(int((mask != 255).sum()) for _, mask in ds)
    assert result.loss == pytest.approx(float(total) / count, rel=1e-5)
    assert evaluate(model, loader, device=CPU, num_classes=3).loss is None


def test_export_writes_voc_palette_pngs_cropped_to_each_image(tmp_path):
    ds = ToyVOC(SIZES, noise=0.8, void_last_row=True)
    model = LocalModel()
    loader = DataLoader(ds, batch_size=3, collate_fn=pad_collate)
    evaluate(
        model, loader, device=CPU, num_classes=3, export_dir=tmp_path / "pred", arithmetic=FP32
    )
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == [f"{i}.png" for i in ds.ids]
    for (image, _), name in zip(ds, ds.ids, strict=True):
        with Image.open(tmp_path / "pred" / f"{name}.png") as png:
            assert png.mode == "P"
            assert png.size == (image.shape[2], image.shape[1])
            assert png.getpalette() == VOC_PALETTE.flatten().tolist()
            labels = np.array(png)
        with torch.no_grad():
            expected = model(image[None])["out"].argmax(1)[0].numpy()
        np.testing.assert_array_equal(labels, expected)
        assert len(np.unique(labels)) > 1


def test_export_refuses_a_shuffling_loader(tmp_path):
    model = CoordModel()
    loader = DataLoader(ToyVOC(SIZES[:1]), batch_size=1, shuffle=True)
    with pytest.raises(ValueError, match="does not shuffle"):
        evaluate(model, loader, device=CPU, num_classes=3, export_dir=tmp_path)
    assert model.seen == []  # refused before any work


def test_export_names_follow_the_sampler_order(tmp_path):
    ds = ToyVOC(SIZES)
    loader = DataLoader(ds, batch_size=2, sampler=[2, 0, 1], collate_fn=pad_collate)
    model = LocalModel()
    evaluate(model, loader, device=CPU, num_classes=3, export_dir=tmp_path, arithmetic=FP32)
    for (image, _), name in zip(ds, ds.ids, strict=True):
        with Image.open(tmp_path / f"{name}.png") as png:
            assert png.size == (image.shape[2], image.shape[1])


# --- modes: eval, inference, autocast, channels_last ------------------------------------------


@pytest.mark.parametrize("was_training", [True, False])
def test_runs_in_eval_and_inference_mode_and_restores_the_mode(was_training):
    model = CoordModel().train(was_training)
    x = torch.randn(1, 3, 4, 8)
    evaluate(
        model,
        [(x, torch.zeros(1, 4, 8, dtype=torch.long))],
        device=CPU,
        num_classes=3,
        arithmetic=FP32,
    )
    assert model.training is was_training
    assert model.seen[0]["training"] is False
    assert model.seen[0]["inference_mode"] is True


@pytest.mark.parametrize("amp,channels_last", [("bf16", True), ("off", False)])
def test_autocast_and_memory_format_follow_the_arguments(amp, channels_last):
    model = CoordModel()
    x = torch.randn(2, 3, 4, 8)
    batch = [(x, torch.zeros(2, 4, 8, dtype=torch.long))]
    arithmetic = Arithmetic(amp, channels_last)
    result = evaluate(model, batch, device=CPU, num_classes=3, arithmetic=arithmetic)
    assert model.seen[0]["autocast"] is (amp == "bf16")
    if amp == "bf16":
        assert model.seen[0]["autocast_dtype"] == torch.bfloat16
    assert model.seen[0]["channels_last"] is channels_last
    assert result.arithmetic == arithmetic


def test_uint8_batches_score_as_their_normalised_floats():
    class Recording(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.seen = []

        def forward(self, x):
            self.seen.append(x.clone())
            return {"out": self.conv(x)}

    torch.manual_seed(0)
    images = torch.randint(0, 256, (2, 3, 6, 8), dtype=torch.uint8)
    masks = torch.randint(0, 3, (2, 6, 8))
    model = Recording()
    results = [
        evaluate(
            model,
            [(batch, masks)],
            device=CPU,
            num_classes=3,
            criterion=nn.CrossEntropyLoss(),
            arithmetic=FP32,
        )
        for batch in (images, normalize(images))
    ]
    assert torch.equal(model.seen[0], model.seen[1])  # the model saw the normalised floats
    assert model.seen[0].dtype == torch.float32
    assert torch.equal(results[0].confusion.matrix, results[1].confusion.matrix)
    assert results[0].loss == results[1].loss


# --- the protocols, batch independence, output stride and export of a saved model ------------


@pytest.fixture(scope="module")
def varied_voc(tmp_path_factory):
    """A VOC-format tree whose images have three different sizes."""
    from test_data import make_voc_tree

    sizes = ((48, 36), (40, 52), (44, 44))
    return make_voc_tree(tmp_path_factory.mktemp("varied"), {"train": 4, "val": 6}, sizes=sizes)


@pytest.fixture(scope="module")
def os16_checkpoint(varied_voc, tmp_path_factory):
    """A small DeepLabv3 (image pooling on) trained one epoch at output stride 16 on 32-px
    resized images: its checkpoint."""
    from deeplab_kit.config import RunConfig
    from deeplab_kit.training.loop import train

    config = RunConfig.from_recipe(
        "ablation",
        data_root=str(varied_voc),
        output_stride=16,
        atrous_rates=(1, 2, 3),
        backbone_width=8,
        aspp_channels=8,
        image_size=32,
        batch_size=2,
        eval_batch_size=2,
        epochs=1,
        device="cpu",
        amp="off",
        lr=1e-2,
    )
    out = tmp_path_factory.mktemp("os16")
    train(config, out, progress=False)
    return out / "checkpoints" / "epoch-0001.pt"


class PooledModel(LocalModel):
    """LocalModel plus an image-level branch, as ASPP's image pooling: every pixel's class 0
    score also rises with the image's mean colour (padding with zeros lowers that mean)."""

    def forward(self, x):
        out = self.conv(x)  # (N, 3, H, W)
        pooled = x.mean(dim=(2, 3))  # (N, 3): what the image-pooling branch sees
        boost = torch.zeros_like(out)
        boost[:, 0] = 6 * (pooled[:, 0, None, None] - 0.3)  # class 0 only
        return {"out": out + boost}


@pytest.mark.parametrize("scales, flip", [((1.0,), False), ((0.75, 1.0, 1.25), True)])
def test_a_prediction_does_not_depend_on_the_other_images_of_its_batch(scales, flip):
    """With image pooling, padding would change an image's prediction; the evaluation collate
    never pads, so each image scores as it does alone, at one scale or several with flips."""
    from deeplab_kit.data.transforms import eval_collate

    ds = ToyVOC([(24, 24), (40, 56), (32, 48)], noise=0.8)
    model = PooledModel()

    def matrix(loader):
        return evaluate(
            model, loader, device=CPU, num_classes=3, scales=scales, flip=flip, arithmetic=FP32
        ).confusion.matrix

    alone = matrix(DataLoader(ds, batch_size=1))
    together = matrix(DataLoader(ds, batch_size=3, collate_fn=eval_collate))
    assert torch.equal(alone, together)
    padded = matrix(DataLoader(ds, batch_size=3, collate_fn=pad_collate))
    assert not torch.equal(alone, padded)  # what padding did: pooling averaged it in


def test_original_protocol_counts_exactly_the_labelled_pixels_of_the_original_masks(
    varied_voc, os16_checkpoint
):
    from deeplab_kit.data.transforms import make_transforms
    from deeplab_kit.data.voc import VOCDataset
    from deeplab_kit.evaluate import evaluate_checkpoint

    raw = VOCDataset(varied_voc, split="val", transforms=None)
    labelled = sum(int((raw.read_raw(i)[1] != 255).sum()) for i in range(len(raw)))
    original = evaluate_checkpoint(os16_checkpoint, varied_voc, progress=False)
    assert original["protocol"] == "original"
    assert sum(map(sum, original["confusion_matrix"])) == labelled
    resized = evaluate_checkpoint(os16_checkpoint, varied_voc, protocol="resized", progress=False)
    at_32 = VOCDataset(varied_voc, split="val", transforms=make_transforms("report", size=32))
    assert resized["protocol"] == "resized"
    assert sum(map(sum, resized["confusion_matrix"])) == sum(
        int((mask != 255).sum()) for _, mask in at_32
    )


@pytest.mark.parametrize("protocol", ["original", "resized"])
def test_the_batch_size_does_not_change_the_scores(varied_voc, os16_checkpoint, protocol):
    from deeplab_kit.evaluate import evaluate_checkpoint

    one, four = (
        evaluate_checkpoint(
            os16_checkpoint, varied_voc, protocol=protocol, batch_size=size, progress=False
        )
        for size in (1, 4)
    )
    assert one["confusion_matrix"] == four["confusion_matrix"]
    assert (one["batch_size"], four["batch_size"]) == (1, 4)


def test_an_os16_checkpoint_evaluates_at_os8_and_exports_for_the_server(
    varied_voc, os16_checkpoint, tmp_path
):
    from deeplab_kit.data.voc import VOCDataset
    from deeplab_kit.evaluate import evaluate_checkpoint

    metrics = evaluate_checkpoint(
        os16_checkpoint,
        varied_voc,
        output_stride=8,
        scales=(0.75, 1.0),
        flip=True,
        export_dir=tmp_path / "server",
        out_dir=tmp_path / "eval",
        progress=False,
    )
    assert (metrics["output_stride"], metrics["scales"], metrics["flip"]) == (8, [0.75, 1.0], True)
    stored = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert stored["output_stride"] == 8 and stored["protocol"] == "original"
    raw = VOCDataset(varied_voc, split="val", transforms=None)
    assert sorted(p.stem for p in (tmp_path / "server").iterdir()) == sorted(raw.ids)
    for i, image_id in enumerate(raw.ids):
        with Image.open(tmp_path / "server" / f"{image_id}.png") as png:
            assert png.mode == "P" and png.getpalette() == VOC_PALETTE.flatten().tolist()
            assert png.size == raw.read_raw(i)[1].shape[::-1]  # (width, height), the original
    with pytest.raises(ValueError, match="needs --protocol original"):
        evaluate_checkpoint(os16_checkpoint, varied_voc, protocol="resized", export_dir=tmp_path)


def test_inference_table_is_the_papers_table_5(varied_voc, os16_checkpoint):
    from deeplab_kit.evaluate import inference_table

    settings = (("OS16", 16, (1.0,), False), ("OS8 + MS + flip", 8, (0.75, 1.0), True))
    table = inference_table(os16_checkpoint, varied_voc, settings=settings, progress=False)
    assert table.index.tolist() == ["OS16", "OS8 + MS + flip"]
    assert table["output stride"].tolist() == [16, 8] and table["flip"].tolist() == [False, True]
    assert table["mIoU (%)"].between(0, 100).all() and (table["protocol"] == "original").all()


def test_a_model_evaluated_in_another_memory_format_can_still_be_trained():
    """evaluate() may move the model to its path's memory format: that must not turn its
    weights into inference-mode tensors (the ablation measures gradients right after)."""
    from deeplab_kit.model import build_model

    model = build_model(backbone="resnet26", backbone_width=8, aspp_channels=8)
    model.to(memory_format=torch.channels_last)
    batch = [(torch.randn(2, 3, 32, 32), torch.zeros(2, 32, 32, dtype=torch.long))]
    evaluate(model, batch, device=CPU, arithmetic=FP32)
    assert not any(p.is_inference() for p in model.parameters())
    x = torch.randn(1, 3, 32, 32, requires_grad=True)
    model.eval()(x)["out"].sum().backward()
    assert x.grad is not None
