"""Tests of deeplab_kit.data.voc: VOC-format trees are generated here; nothing touches the network."""

from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import savemat
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from deeplab_kit.data.classes import VOC_PALETTE, save_mask
from deeplab_kit.data.loader import KeyedSampler, SampleKey, make_loader
from deeplab_kit.data.synthetic import draw_voc_like_sample, make_voc_like_tree
from deeplab_kit.data.transforms import IMAGENET_MEAN, IMAGENET_STD, make_transforms
from deeplab_kit.data.voc import VOCDataset

# --- a VOC-format tree, written by the tests -------------------------------------------------


def make_voc_tree(root: Path, splits: dict[str, int], *, seed: int = 0, sizes=((48, 36), (40, 52))):
    """A small VOC-format tree (images of two odd sizes) for the data tests."""
    return make_voc_like_tree(root, splits, sizes=sizes, seed=seed)


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory) -> Path:
    return make_voc_tree(tmp_path_factory.mktemp("voc"), {"train": 12, "val": 5})


def _rewrite_file(path: Path, data: bytes) -> None:
    """Replace a file's bytes and make sure its mtime moves (coarse clocks)."""
    before = path.stat().st_mtime_ns
    path.write_bytes(data)
    os.utime(path, ns=(before + 10**9, before + 10**9))


def _loader_batches(dataset, epoch: int, **loader_args) -> list:
    loader = make_loader(dataset, **loader_args)
    loader.set_epoch(epoch)
    return list(loader)


def _assert_same_batches(left: list, right: list) -> None:
    assert len(left) == len(right)
    for (a_images, a_masks), (b_images, b_masks) in zip(left, right, strict=True):
        assert torch.equal(a_images, b_images) and torch.equal(a_masks, b_masks)


# --- items, presets and the label set ---------------------------------------------------------


def test_items_are_normalised_float_images_and_int64_masks(voc_root):
    ds = VOCDataset(voc_root, "val")  # "report": 256 x 256
    image, mask = ds[0]
    assert image.shape == (3, 256, 256) and image.dtype == torch.float32
    assert mask.shape == (256, 256) and mask.dtype == torch.int64
    # Normalised with ImageNet's mean and std: undoing it gives the resized raw image back.
    raw_image, _ = ds.read_raw(0)
    resized = F.resize(torch.from_numpy(raw_image).permute(2, 0, 1), [256, 256], antialias=True)
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    assert torch.allclose(image, (resized / 255 - mean) / std, atol=1e-5)


def test_ids_and_paths_follow_the_split_file(voc_root):
    ds = VOCDataset(voc_root, "val", None)
    listed = (voc_root / "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt").read_text().split()
    assert ds.ids == listed and len(ds) == 5
    assert [p.name for p in ds.image_paths] == [f"{i}.jpg" for i in listed]
    assert [p.name for p in ds.mask_paths] == [f"{i}.png" for i in listed]


def test_report_mask_labels_are_the_png_labels(voc_root):
    upsampled = VOCDataset(voc_root, "train", make_transforms("report", size=96))
    downsampled = VOCDataset(voc_root, "train", make_transforms("report", size=24))
    for i in range(len(upsampled)):
        png_labels = set(np.unique(np.array(Image.open(upsampled.mask_paths[i]))).tolist())
        assert set(upsampled[i][1].unique().tolist()) == png_labels
        # Shrunk, thin void borders may vanish, but nearest never invents a label, and the
        # objects (a quarter of the image or more) all survive.
        small = set(downsampled[i][1].unique().tolist())
        assert small <= png_labels
        assert small - {255} == png_labels - {255}


def test_none_gives_the_raw_pixels_as_tensors(voc_root):
    ds = VOCDataset(voc_root, "train", None)
    for i in (0, 1):
        image, mask = ds[i]
        raw_image, raw_mask = ds.read_raw(i)
        assert image.dtype == torch.uint8 and mask.dtype == torch.int64
        assert torch.equal(image, torch.from_numpy(raw_image).permute(2, 0, 1))
        assert torch.equal(mask, torch.from_numpy(raw_mask).long())


def test_paper_train_scales_crops_and_pads_image_0_mask_255(voc_root):
    # Scale fixed at 0.5: a 48x36 image becomes 24x18, smaller than the 40 crop: padded.
    preset = make_transforms("paper-train", crop_size=40, scale_range=(0.5, 0.5), hflip=False)
    ds = VOCDataset(voc_root, "train", preset)
    image, mask = ds[0]
    assert image.shape == (3, 40, 40) and mask.shape == (40, 40)
    _, raw_mask = ds.read_raw(0)
    h, w = round(raw_mask.shape[0] * 0.5), round(raw_mask.shape[1] * 0.5)
    expected = F.resize(
        torch.from_numpy(raw_mask)[None], [h, w], interpolation=F.InterpolationMode.NEAREST_EXACT
    )[0]
    assert torch.equal(mask[:h, :w], expected.long())
    assert (mask[h:, :] == 255).all() and (mask[:, w:] == 255).all()
    assert (image[:, h:, :] == 0).all() and (image[:, :, w:] == 0).all()
    assert (image[:, :h, :w] != 0).any()


def test_paper_train_flips_half_of_the_samples_as_mirror_images(voc_root):
    plain = VOCDataset(
        voc_root,
        "train",
        make_transforms("paper-train", crop_size=56, scale_range=(1, 1), hflip=False),
    )
    flipping = VOCDataset(
        voc_root, "train", make_transforms("paper-train", crop_size=56, scale_range=(1, 1))
    )
    flipped = []
    for i in range(len(plain)):
        reference, sample = plain[i], flipping[i]
        was_flipped = torch.equal(sample[1], reference[1].flip(-1))
        assert was_flipped or torch.equal(sample[1], reference[1])
        expected_image = reference[0].flip(-1) if was_flipped else reference[0]
        assert torch.equal(sample[0], expected_image)
        flipped.append(was_flipped)
    assert any(flipped) and not all(flipped)


def test_paper_train_sample_is_keyed_by_seed_epoch_and_index(voc_root):
    preset = make_transforms("paper-train", crop_size=32)
    ds = VOCDataset(voc_root, "train", preset, seed=3)
    again = VOCDataset(voc_root, "train", preset, seed=3)
    other_seed = VOCDataset(voc_root, "train", preset, seed=4)
    assert all(torch.equal(ds[i, 2][0], again[i, 2][0]) for i in range(4))
    assert torch.equal(ds[1][0], ds[1, 0][0])  # a bare index is epoch 0
    assert any(not torch.equal(ds[i, 2][0], ds[i, 3][0]) for i in range(4))
    assert any(not torch.equal(ds[i, 2][0], other_seed[i, 2][0]) for i in range(4))


def test_paper_eval_batches_images_of_different_sizes_padded(voc_root):
    ds = VOCDataset(voc_root, "train", "paper-eval")  # sizes alternate 48x36 and 40x52
    images, masks = next(iter(make_loader(ds, batch_size=4)))
    assert images.shape == (4, 3, 52, 48) and masks.shape == (4, 52, 48)
    for i in range(4):
        image, mask = ds[i]
        h, w = mask.shape
        assert torch.equal(images[i, :, :h, :w], image) and torch.equal(masks[i, :h, :w], mask)
        assert (images[i, :, h:] == 0).all() and (images[i, :, :, w:] == 0).all()
        assert (masks[i, h:] == 255).all() and (masks[i, :, w:] == 255).all()


def test_make_transforms_overrides_and_rejects_unknowns():
    preset = make_transforms("report", size=96, hflip=True)
    assert (preset.size, preset.hflip, preset.name) == (96, True, "report")
    assert make_transforms("report").size == 256 and not make_transforms("report").hflip
    with pytest.raises(ValueError, match="unknown transforms preset 'reprot'"):
        make_transforms("reprot")
    with pytest.raises(ValueError, match="unknown transforms parameter"):
        make_transforms("report", sise=96)
    with pytest.raises(ValueError, match="size must be a positive int"):
        make_transforms("report", size=0)
    with pytest.raises(ValueError, match="scale_range"):
        make_transforms("paper-train", scale_range=(2.0, 0.5))


def test_a_callable_gets_keyed_randomness_and_the_global_rng_is_restored(voc_root):
    flip = v2.RandomHorizontalFlip(p=0.5)  # draws from the global RNG
    ds = VOCDataset(voc_root, "train", lambda image, mask: flip(image, mask))
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = [ds[i, 1] for i in range(len(ds))]
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(999)  # whatever the global state, the same key gives the same sample
    second = [ds[i, 1] for i in range(len(ds))]
    assert all(torch.equal(a[1], b[1]) for a, b in zip(first, second, strict=True))
    raw = [torch.from_numpy(ds.read_raw(i)[1]) for i in range(len(ds))]
    flipped = [
        torch.equal(m, r.flip(-1)) and not torch.equal(m, r)
        for (_, m), r in zip(first, raw, strict=True)
    ]
    assert any(flipped) and not all(flipped)


# --- the loader -------------------------------------------------------------------------------


def test_loading_never_touches_the_global_rng(voc_root):
    ds = VOCDataset(voc_root, "train", make_transforms("paper-train", crop_size=32))
    state = torch.get_rng_state()
    _loader_batches(ds, 0, batch_size=4, shuffle=True, drop_last=True)
    assert torch.equal(torch.get_rng_state(), state)


def test_batches_do_not_depend_on_workers_and_the_epoch_reaches_them(voc_root):
    ds = VOCDataset(voc_root, "train", make_transforms("paper-train", crop_size=32), seed=5)
    args = dict(batch_size=4, shuffle=True, drop_last=True)
    in_process = [_loader_batches(ds, epoch, num_workers=0, **args) for epoch in (0, 1)]
    workers = make_loader(ds, num_workers=2, **args)  # persistent workers, reused across epochs
    for epoch in (0, 1):
        workers.set_epoch(epoch)
        _assert_same_batches(list(workers), in_process[epoch])
        # Each sample is the one its (seed, epoch, index) key gives: the workers saw the epoch.
        order = workers.sampler.indices(epoch)
        expected = [ds[i, epoch] for i in order]
        images = torch.cat([images for images, _ in in_process[epoch]])
        assert all(torch.equal(images[k], expected[k][0]) for k in range(len(order)))
    # A fresh loader set to the same epoch (a restarted session) sees the same data.
    _assert_same_batches(_loader_batches(ds, 1, num_workers=0, **args), in_process[1])


def test_memory_is_pinned_when_cuda_is_there(voc_root, monkeypatch):
    ds = VOCDataset(voc_root, "val", make_transforms("report", size=16))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not make_loader(ds, batch_size=2).pin_memory
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert make_loader(ds, batch_size=2).pin_memory
    assert not make_loader(ds, batch_size=2, pin_memory=False).pin_memory


def test_len_is_a_full_epoch_of_batches_for_this_rank(voc_root):
    ds = VOCDataset(voc_root, "train", make_transforms("report", size=16))  # 12 samples
    assert len(make_loader(ds, batch_size=5)) == 3
    assert len(make_loader(ds, batch_size=5, drop_last=True)) == 2
    assert len(make_loader(ds, batch_size=2, world_size=5, rank=4)) == 1  # 12 = 3+3+2+2+2
    assert len(make_loader(ds, batch_size=2, world_size=5, rank=0, drop_last=True)) == 1


@pytest.mark.parametrize("drop_last", [False, True])
def test_ddp_shards_are_disjoint_and_share_one_order(drop_last):
    single = list(KeyedSampler(11, seed=7, drop_last=False).indices(4))
    shards = [
        KeyedSampler(11, seed=7, rank=r, world_size=3, drop_last=drop_last).indices(4)
        for r in range(3)
    ]
    flat = [i for shard in shards for i in shard]
    assert len(flat) == len(set(flat))
    if drop_last:
        assert [len(s) for s in shards] == [3, 3, 3]
    else:
        assert sorted(flat) == list(range(11))
    for rank, shard in enumerate(shards):
        assert shard == single[rank : len(flat) if drop_last else None : 3][: len(shard)]
    assert single != KeyedSampler(11, seed=7).indices(5)  # another epoch, another order
    assert sorted(single) == list(range(11))


def test_skip_batches_resumes_mid_epoch(voc_root):
    ds = VOCDataset(voc_root, "train", make_transforms("report", size=16, hflip=True))
    loader = make_loader(ds, batch_size=3, shuffle=True, drop_last=True)
    loader.set_epoch(2)
    full = list(loader)
    loader.set_epoch(2, skip_batches=2)
    assert len(loader) == 4
    _assert_same_batches(list(loader), full[2:])
    _assert_same_batches(list(loader), full[2:])  # a second look sees the same (e.g. for ids)
    loader.set_epoch(3)
    assert len(list(loader)) == 4  # the next epoch is whole
    with pytest.raises(ValueError, match="skip_batches"):
        loader.set_epoch(2, skip_batches=5)


def test_sample_keys_are_indices_that_carry_their_epoch(voc_root):
    ds = VOCDataset(voc_root, "train", make_transforms("paper-train", crop_size=32))
    key = pickle.loads(pickle.dumps(SampleKey(3, epoch=2)))  # as sent to a worker
    assert key == 3 and key.epoch == 2 and ds.ids[key] == ds.ids[3]
    assert torch.equal(ds[key][0], ds[3, 2][0]) and not torch.equal(ds[key][0], ds[3][0])
    loader = make_loader(ds, batch_size=4, shuffle=True)
    loader.set_epoch(6)
    keys = [key for batch in loader.batch_sampler for key in batch]
    assert {key.epoch for key in keys} == {6} and sorted(keys) == list(range(len(ds)))


def test_make_loader_serves_plain_datasets_too():
    data = torch.utils.data.TensorDataset(torch.arange(10))
    loader = make_loader(data, batch_size=4, shuffle=True, seed=1)
    loader.set_epoch(3)
    (values,) = zip(*list(loader), strict=True)
    assert sorted(torch.cat(values).tolist()) == list(range(10))


# --- the cache --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [dict(size=24, hflip=True), dict(size=32, scale_range=(0.7, 1.3), crop_size=24, hflip=True)],
    ids=["flip (batched)", "scale-crop-flip (per sample)"],
)
def test_cached_batches_equal_decoded_ones(voc_root, tmp_path, params):
    preset = make_transforms("report", **params)
    cached = VOCDataset(voc_root, "train", preset, cache_dir=tmp_path)
    decoded = VOCDataset(voc_root, "train", preset)
    for epoch in (0, 1, 2):
        args = dict(batch_size=4, shuffle=True)
        _assert_same_batches(
            _loader_batches(cached, epoch, **args), _loader_batches(decoded, epoch, **args)
        )
    assert all(torch.equal(cached[i, 1][0], decoded[i, 1][0]) for i in range(3))
    manifest = json.loads((cached.cache.folder / "manifest.json").read_text())
    assert manifest["preprocessing"]["size"] == params["size"] and manifest["format"] == 1
    assert len(manifest["sources"]) == 12


def test_cache_is_reused_and_rebuilt_when_a_source_or_the_size_changes(tmp_path):
    root = make_voc_tree(tmp_path / "voc", {"train": 4})
    cache_dir = tmp_path / "cache"
    first = VOCDataset(root, "train", make_transforms("report", size=16), cache_dir=cache_dir)
    images_file = first.cache.folder / "images.npy"
    built = images_file.stat().st_mtime_ns
    again = VOCDataset(
        root, "train", make_transforms("report", size=16, hflip=True), cache_dir=cache_dir
    )
    assert again.cache.folder == first.cache.folder and images_file.stat().st_mtime_ns == built

    # A changed mask: the manifest no longer matches, the cache is rebuilt with the new labels.
    labels = np.full((36, 48), 7, dtype=np.uint8)
    buffer = io.BytesIO()
    mask = Image.fromarray(labels)
    mask.putpalette(VOC_PALETTE.tobytes())
    mask.save(buffer, format="PNG")
    _rewrite_file(first.mask_paths[0], buffer.getvalue())
    rebuilt = VOCDataset(root, "train", make_transforms("report", size=16), cache_dir=cache_dir)
    assert images_file.stat().st_mtime_ns != built
    assert set(rebuilt[0][1].unique().tolist()) == {7}

    # Another size: its own cache, of that size.
    other = VOCDataset(root, "train", make_transforms("report", size=8), cache_dir=cache_dir)
    assert other.cache.folder != first.cache.folder and other[0][0].shape == (3, 8, 8)


def test_cache_of_a_symlinked_voc_folder(tmp_path):
    elsewhere = make_voc_tree(tmp_path / "drive", {"train": 2})  # e.g. a mounted Google Drive
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "VOCdevkit").symlink_to(elsewhere / "VOCdevkit")
    preset = make_transforms("report", size=16)
    ds = VOCDataset(tmp_path / "root", "train", preset, cache_dir=tmp_path / "cache")
    assert torch.equal(ds[1][1], VOCDataset(elsewhere, "train", preset)[1][1])


def test_interrupted_cache_build_leaves_nothing_that_looks_valid(tmp_path, monkeypatch):
    root = make_voc_tree(tmp_path / "voc", {"train": 4})
    cache_dir = tmp_path / "cache"
    real = VOCDataset._read_prepared

    def fail_at_third(self, index):
        if index == 2:
            raise KeyboardInterrupt
        return real(self, index)

    monkeypatch.setattr(VOCDataset, "_read_prepared", fail_at_third)
    with pytest.raises(KeyboardInterrupt):
        VOCDataset(root, "train", make_transforms("report", size=16), cache_dir=cache_dir)
    assert list(cache_dir.iterdir()) == []  # no cache folder, no temporary left behind
    monkeypatch.setattr(VOCDataset, "_read_prepared", real)
    ds = VOCDataset(root, "train", make_transforms("report", size=16), cache_dir=cache_dir)
    assert [p.name for p in cache_dir.iterdir()] == [ds.cache.folder.name]


def test_damaged_cache_is_rebuilt(tmp_path):
    root = make_voc_tree(tmp_path / "voc", {"train": 3})
    first = VOCDataset(root, "train", make_transforms("report", size=16), cache_dir=tmp_path / "c")
    expected = first[2]
    images_file = first.cache.folder / "images.npy"
    images_file.write_bytes(images_file.read_bytes()[:1000])  # truncated
    again = VOCDataset(root, "train", make_transforms("report", size=16), cache_dir=tmp_path / "c")
    assert torch.equal(again[2][0], expected[0]) and torch.equal(again[2][1], expected[1])


def test_cache_needs_a_fixed_size_preset(voc_root, tmp_path):
    with pytest.raises(ValueError, match="fixed size"):
        VOCDataset(voc_root, "train", "paper-train", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="fixed size"):
        VOCDataset(voc_root, "train", lambda image, mask: (image, mask), cache_dir=tmp_path)


def test_a_pickled_cached_dataset_does_not_carry_the_arrays(voc_root, tmp_path):
    ds = VOCDataset(voc_root, "train", make_transforms("report", size=64), cache_dir=tmp_path)
    ds[0]  # maps the arrays in this process
    copy = pickle.loads(pickle.dumps(ds))  # what a spawn-started worker receives
    assert len(pickle.dumps(ds)) < (ds.cache.folder / "images.npy").stat().st_size
    assert torch.equal(copy[3, 1][0], ds[3, 1][0])


# --- bad input --------------------------------------------------------------------------------


@pytest.fixture
def small_root(tmp_path) -> Path:
    return make_voc_tree(tmp_path / "voc", {"train": 2})


def test_missing_root_or_voc_folder_says_how_to_get_the_data(tmp_path):
    with pytest.raises(FileNotFoundError, match="download voc") as error:
        VOCDataset(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(error.value) and "synth" in str(error.value)
    with pytest.raises(FileNotFoundError, match="VOCdevkit/VOC2012") as error:
        VOCDataset(tmp_path)
    assert "download voc" in str(error.value)


def test_missing_split_file_is_named_with_the_splits_there(small_root):
    with pytest.raises(FileNotFoundError, match=r"ImageSets/Segmentation/val\.txt") as error:
        VOCDataset(small_root, "val")
    # VOC is there, only this split is not: no advice to download or generate into this folder
    assert "['train']" in str(error.value) and "download voc" not in str(error.value)
    assert "synth" not in str(error.value)
    for listed in (small_root / "VOCdevkit/VOC2012/ImageSets/Segmentation").glob("*.txt"):
        listed.unlink()
    with pytest.raises(FileNotFoundError, match="download voc"):  # no split at all: get the data
        VOCDataset(small_root, "val")


def test_missing_listed_file_is_named(small_root):
    (small_root / "VOCdevkit/VOC2012/JPEGImages/2012_train_0001.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"2012_train_0001\.jpg: listed by split 'train'"):
        VOCDataset(small_root, "train")


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if how == "truncated" else b"not an image at all" * 20)


@pytest.mark.parametrize("how", ["truncated", "garbage"])
@pytest.mark.parametrize("which", ["image", "mask"])
def test_corrupt_or_truncated_files_are_named(small_root, which, how):
    ds = VOCDataset(small_root, "train", make_transforms("report", size=16))
    path = (ds.image_paths if which == "image" else ds.mask_paths)[1]
    _damage(path, how)
    with pytest.raises(ValueError, match=f"{path}: cannot decode {which}"):
        ds[1]
    ds[0]  # the others still load


def test_an_rgb_mask_reads_by_its_colours_and_an_unknown_colour_is_named(small_root):
    ds = VOCDataset(small_root, "train")
    indices = np.array(Image.open(ds.mask_paths[0]))
    Image.fromarray(VOC_PALETTE[indices]).save(ds.mask_paths[0])  # the colours, not the indices
    assert (ds.read_raw(0)[1] == indices).all()
    rgb = VOC_PALETTE[indices].copy()
    rgb[0, 0] = (1, 2, 3)  # a colour of no class
    Image.fromarray(rgb).save(ds.mask_paths[0])
    with pytest.raises(ValueError, match=rf"{ds.mask_paths[0]}: .*\(1, 2, 3\)"):
        ds[0]


def test_mask_of_another_size_is_rejected(small_root):
    ds = VOCDataset(small_root, "train")
    save_mask(np.zeros((30, 30), dtype=np.uint8), ds.mask_paths[0])
    with pytest.raises(
        ValueError, match=rf"{ds.mask_paths[0]}: mask is 30x30 but its image .* is 48x36"
    ):
        ds[0]


def test_labels_out_of_range_are_rejected(small_root, tmp_path):
    ds = VOCDataset(small_root, "train")
    labels = np.array(Image.open(ds.mask_paths[1]))
    labels[0, :3] = (21, 40, 254)
    Image.fromarray(labels).save(ds.mask_paths[1])  # greyscale PNG
    with pytest.raises(
        ValueError, match=rf"{ds.mask_paths[1]}: labels \[21, 40, 254\] outside 0..20 and 255"
    ):
        ds[1]
    with pytest.raises(ValueError, match="outside 0..20"):  # and the cache build stops there too
        VOCDataset(small_root, "train", cache_dir=tmp_path / "cache")
    assert not any((tmp_path / "cache").iterdir())


# --- trainaug: VOC train + SBD ----------------------------------------------------------------


def _write_sbd(sbd: Path, ids_train: list[str], ids_val: list[str], seed: int = 1) -> dict:
    """SBD's layout: cls/<id>.mat (GTcls.Segmentation), img/<id>.jpg, train.txt, val.txt."""
    rng = np.random.default_rng(seed)
    (sbd / "cls").mkdir(parents=True)
    (sbd / "img").mkdir()
    labels_of = {}
    for sample_id in ids_train + ids_val:
        image, labels = draw_voc_like_sample(rng, 40, 30)
        labels[labels == 255] = 0  # SBD has no void border
        savemat(sbd / "cls" / f"{sample_id}.mat", {"GTcls": {"Segmentation": labels}})
        Image.fromarray(image).save(sbd / "img" / f"{sample_id}.jpg")
        labels_of[sample_id] = labels
    (sbd / "train.txt").write_text("\n".join(ids_train) + "\n")
    (sbd / "val.txt").write_text("\n".join(ids_val) + "\n")
    return labels_of


@pytest.mark.parametrize("layout", ["SBD", "benchmark_RELEASE/dataset"])
def test_trainaug_joins_voc_train_and_sbd_without_voc_val(tmp_path, layout):
    root = make_voc_tree(tmp_path / "voc", {"train": 3, "val": 2})
    voc_train = ["2012_train_0000", "2012_train_0001", "2012_train_0002"]
    # SBD holds one VOC train id, one VOC val id (must be left out) and three of its own.
    sbd_labels = _write_sbd(
        root / layout,
        ["2012_train_0000", "2012_val_0001", "2008_000001"],
        ["2008_000002", "2008_000003"],
    )
    ds = VOCDataset(root, "trainaug", None)
    assert ds.ids == sorted(voc_train + ["2008_000001", "2008_000002", "2008_000003"])
    for i, sample_id in enumerate(ds.ids):
        mask = ds[i][1].numpy()
        if sample_id in voc_train:  # VOC's own labels where it has them
            assert ds.mask_paths[i].parent.name == "SegmentationClass"
        else:
            assert ds.mask_paths[i].parent == root / layout / "cls_png"
            assert np.array_equal(mask, sbd_labels[sample_id])
            assert Image.open(ds.mask_paths[i]).mode == "P"
    converted = {p: p.stat().st_mtime_ns for p in (root / layout / "cls_png").iterdir()}
    VOCDataset(root, "trainaug", None)  # converted once: nothing rewritten
    assert {p: p.stat().st_mtime_ns for p in (root / layout / "cls_png").iterdir()} == converted


def test_trainaug_without_sbd_says_how_to_get_it(small_root):
    (small_root / "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt").write_text("")
    with pytest.raises(FileNotFoundError, match="download sbd"):
        VOCDataset(small_root, "trainaug")
