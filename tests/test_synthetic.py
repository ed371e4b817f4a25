"""The synthetic VOC: VOC's formats, determinism, the manifest, and that it needs context."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from deeplab_kit.cli import main
from deeplab_kit.data import synthetic_shapes
from deeplab_kit.data.classes import IGNORE_INDEX, NUM_CLASSES, VOC_CLASSES, VOC_PALETTE
from deeplab_kit.data.synthetic import make_synthetic_voc


def voc_dir(root):
    return root / "VOCdevkit" / "VOC2012"


def read_split(root, split):
    """(N, H, W, 3) uint8 images and (N, H, W) uint8 masks of a split, read from the files."""
    voc = voc_dir(root)
    ids = (voc / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()
    images = np.stack([np.asarray(Image.open(voc / "JPEGImages" / f"{i}.jpg")) for i in ids])
    masks = np.stack([np.asarray(Image.open(voc / "SegmentationClass" / f"{i}.png")) for i in ids])
    return images, masks


def tree_bytes(root):
    voc = voc_dir(root)
    return {
        p.relative_to(voc).as_posix(): p.read_bytes() for p in sorted(voc.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def default_root(tmp_path_factory):
    """The default dataset: 200 train and 50 val images of 128x128, seed 0."""
    return make_synthetic_voc(tmp_path_factory.mktemp("synthetic"))


def test_writes_a_voc_tree_with_voc_formats(default_root):
    voc = voc_dir(default_root)
    train = (voc / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    val = (voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    assert len(train) == 200 and len(val) == 50 and not set(train) & set(val)
    for image_id in train[:5] + val[:5]:
        image = Image.open(voc / "JPEGImages" / f"{image_id}.jpg")
        mask = Image.open(voc / "SegmentationClass" / f"{image_id}.png")
        assert image.format == "JPEG" and image.mode == "RGB" and image.size == (128, 128)
        assert mask.format == "PNG" and mask.mode == "P" and mask.size == (128, 128)
        palette = np.frombuffer(bytes(mask.getpalette()), dtype=np.uint8).reshape(-1, 3)
        assert np.array_equal(palette, VOC_PALETTE[: len(palette)])
        assert len(palette) == 256


def test_every_class_appears_in_both_splits_with_void_labels_only_extra(default_root):
    for split in ("train", "val"):
        _, masks = read_split(default_root, split)
        values = set(np.unique(masks).tolist())
        assert values == set(range(NUM_CLASSES)) | {IGNORE_INDEX}, split
        objects_per_image = [len(set(np.unique(m).tolist()) - {0, IGNORE_INDEX}) for m in masks]
        assert np.mean(objects_per_image) >= 2.5  # several objects per image


def test_void_band_separates_every_pair_of_labels(default_root):
    _, masks = read_split(default_root, "val")
    for a, b in ((masks[:, 1:, :], masks[:, :-1, :]), (masks[:, :, 1:], masks[:, :, :-1])):
        touching = (a != b) & (a != IGNORE_INDEX) & (b != IGNORE_INDEX)
        assert not touching.any()  # two labels never meet without void between them
    void = (masks == IGNORE_INDEX).mean()
    assert 0.02 < void < 0.2  # a thin band, as in VOC, not whole regions


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    args = dict(num_train=3, num_val=2, size=64)
    first = tree_bytes(make_synthetic_voc(tmp_path / "a", seed=7, **args))
    again = tree_bytes(make_synthetic_voc(tmp_path / "b", seed=7, **args))
    other = tree_bytes(make_synthetic_voc(tmp_path / "c", seed=8, **args))
    assert first == again
    images = [name for name in first if name.endswith((".jpg", ".png"))]
    assert len(images) == 10
    assert all(first[name] != other[name] for name in images)


def test_a_bigger_dataset_starts_with_the_same_images(tmp_path):
    small = tree_bytes(make_synthetic_voc(tmp_path / "small", num_train=2, num_val=1, size=48))
    big = tree_bytes(make_synthetic_voc(tmp_path / "big", num_train=5, num_val=2, size=48))
    shared = [name for name in small if name.endswith((".jpg", ".png"))]
    assert all(small[name] == big[name] for name in shared)


def test_identical_dataset_is_not_regenerated_other_arguments_are(tmp_path):
    root = make_synthetic_voc(tmp_path, num_train=4, num_val=2, size=48)
    voc = voc_dir(root)
    image = voc / "JPEGImages" / "train_00000.jpg"
    image.write_bytes(b"left alone")  # a regeneration would overwrite this
    assert make_synthetic_voc(tmp_path, num_train=4, num_val=2, size=48) == root
    assert image.read_bytes() == b"left alone"

    make_synthetic_voc(tmp_path, num_train=2, num_val=2, size=48)
    assert Image.open(image).size == (48, 48)  # regenerated
    assert not (voc / "JPEGImages" / "train_00003.jpg").exists()  # no stale images left
    assert (voc / "ImageSets" / "Segmentation" / "train.txt").read_text().split() == [
        "train_00000",
        "train_00001",
    ]


def test_missing_files_trigger_regeneration(tmp_path):
    root = make_synthetic_voc(tmp_path, num_train=3, num_val=1, size=48)
    last = voc_dir(root) / "SegmentationClass" / "train_00002.png"
    last.unlink()
    make_synthetic_voc(tmp_path, num_train=3, num_val=1, size=48)
    assert last.is_file()


def test_an_interrupted_generation_is_finished_by_the_next_call(tmp_path, monkeypatch):
    from deeplab_kit.data import synthetic

    real_render, calls = synthetic.render, []

    def render_then_stop(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the process stopped mid-way
        return real_render(*args)

    monkeypatch.setattr(synthetic, "render", render_then_stop)
    with pytest.raises(KeyboardInterrupt):
        make_synthetic_voc(tmp_path, num_train=4, num_val=2, size=48)
    monkeypatch.setattr(synthetic, "render", real_render)
    root = make_synthetic_voc(tmp_path, num_train=4, num_val=2, size=48)
    voc = voc_dir(root)
    assert len(list((voc / "JPEGImages").glob("*.jpg"))) == 6
    assert json.loads((voc / synthetic.MANIFEST_NAME).read_text()).get("complete") is None


def test_a_tree_from_the_generators_former_name_is_regenerated(tmp_path):
    from deeplab_kit.data import synthetic

    root = make_synthetic_voc(tmp_path, num_train=2, num_val=1, size=48)
    manifest = voc_dir(root) / synthetic.MANIFEST_NAME
    older = {**json.loads(manifest.read_text()), "generator": synthetic.FORMER_GENERATORS[0]}
    manifest.write_text(json.dumps(older))
    make_synthetic_voc(tmp_path, num_train=2, num_val=1, size=48)
    assert json.loads(manifest.read_text())["generator"] == synthetic.GENERATOR


def test_refuses_to_overwrite_a_voc_tree_it_did_not_write(tmp_path):
    images = voc_dir(tmp_path) / "JPEGImages"
    images.mkdir(parents=True)
    (images / "2007_000032.jpg").write_bytes(b"a real VOC image")
    with pytest.raises(ValueError, match="did not write"):
        make_synthetic_voc(tmp_path, num_train=2, num_val=1, size=48)
    assert (images / "2007_000032.jpg").read_bytes() == b"a real VOC image"


@pytest.mark.parametrize(
    "arguments, name",
    [
        (dict(num_train=0), "num_train"),
        (dict(num_val=-1), "num_val"),
        (dict(size=16), "size"),
        (dict(seed=-3), "seed"),
        (dict(size=64.0), "size"),
    ],
)
def test_bad_arguments_are_named(tmp_path, arguments, name):
    with pytest.raises(ValueError, match=name):
        make_synthetic_voc(tmp_path, **arguments)


def test_documented_shape_table_covers_every_class():
    rows = [
        line
        for line in synthetic_shapes.__doc__.splitlines()
        if line.startswith("|") and "|" in line[1:]
    ]
    documented = {cells.split("|")[2].strip() for cells in rows[2:]}
    assert documented == set(VOC_CLASSES[1:]) == set(synthetic_shapes.SHAPES)


def test_cli_synth_writes_the_tree(tmp_path, capsys):
    code = main(
        [
            "synth",
            "--out",
            str(tmp_path),
            "--train",
            "3",
            "--val",
            "2",
            "--size",
            "40",
            "--seed",
            "1",
        ]
    )
    assert code == 0
    assert len(read_split(tmp_path, "train")[0]) == 3
    assert read_split(tmp_path, "val")[1].shape == (2, 40, 40)
    assert str(tmp_path) in capsys.readouterr().out


def test_cli_synth_reports_bad_arguments(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path), "--size", "8"]) == 2
    assert "size" in capsys.readouterr().err


# --- a colour-only classifier cannot solve it -----------------------------------------------


def colour_bins(images, levels=16):
    """Each pixel's quantised RGB colour as one bin index: (N, H, W) int64 in 0..levels**3."""
    q = images.astype(np.int64) * levels // 256
    return (q[..., 0] * levels + q[..., 1]) * levels + q[..., 2]


def fit_colour_classifier(images, masks, levels=16):
    """The best per-pixel colour-only rule (up to quantisation): the most frequent class per bin.

    Counting (bin, class) pairs on the training pixels and taking the argmax per bin is the
    Bayes decision for P(class | colour) estimated by a histogram.
    """
    keep = masks != IGNORE_INDEX
    pairs = colour_bins(images, levels)[keep] * NUM_CLASSES + masks[keep]
    counts = np.bincount(pairs, minlength=levels**3 * NUM_CLASSES).reshape(-1, NUM_CLASSES)
    return counts.argmax(axis=1)  # (levels**3,): unseen colours go to class 0, background


def miou(pred, masks):
    keep = masks != IGNORE_INDEX
    confusion = np.bincount(
        masks[keep].astype(np.int64) * NUM_CLASSES + pred[keep], minlength=NUM_CLASSES**2
    ).reshape(NUM_CLASSES, NUM_CLASSES)
    union = confusion.sum(0) + confusion.sum(1) - np.diag(confusion)
    present = union > 0
    return float((np.diag(confusion)[present] / union[present]).mean())


def test_colour_only_classifier_scores_at_most_030_miou(default_root):
    train_images, train_masks = read_split(default_root, "train")
    val_images, val_masks = read_split(default_root, "val")
    rule = fit_colour_classifier(train_images, train_masks)
    score = miou(rule[colour_bins(val_images)], val_masks)
    print(f"colour-only classifier: val mIoU {score:.3f}")
    assert score <= 0.30


def test_the_colour_classifier_does_solve_a_dataset_coloured_by_class(default_root):
    # The control: paint each pixel with its class's palette colour (plus noise) and the same
    # rule scores high, so the low score above is the dataset's doing, not the rule's.
    rng = np.random.default_rng(0)

    def coloured(masks):
        noisy = VOC_PALETTE[masks].astype(np.int64) + rng.integers(-6, 7, masks.shape + (3,))
        return np.clip(noisy, 0, 255).astype(np.uint8)

    _, train_masks = read_split(default_root, "train")
    _, val_masks = read_split(default_root, "val")
    rule = fit_colour_classifier(coloured(train_masks), train_masks)
    assert miou(rule[colour_bins(coloured(val_masks))], val_masks) > 0.9


def test_silhouettes_are_distinct_and_fill_their_frame():
    drawn = {name: synthetic_shapes.silhouette(name, size=48) for name in VOC_CLASSES[1:]}
    for name, shape in drawn.items():
        assert shape.shape == (48, 48) and 0.1 < (shape > 0).mean() < 0.8, name
    names = list(drawn)
    for i, a in enumerate(names):  # no two classes share a silhouette
        for b in names[i + 1 :]:
            overlap = ((drawn[a] > 0) & (drawn[b] > 0)).sum() / (
                (drawn[a] > 0) | (drawn[b] > 0)
            ).sum()
            assert overlap < 0.8, (a, b)
    with pytest.raises(ValueError, match="unknown class"):
        synthetic_shapes.silhouette("unicorn")
