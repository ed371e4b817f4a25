"""The data: PASCAL VOC 2012 and SBD's "trainaug", and a generated dataset in VOC's exact format.

    from deeplab_kit.data import VOCDataset, make_synthetic_voc
    root = make_synthetic_voc("data/synthetic", num_train=64, num_val=16, size=96)
    image, mask = VOCDataset(root, split="val", transforms="report")[0]

| module | what it holds |
|---|---|
| `classes` | a dataset's classes (VOC's, or your own from a classes file), the void label, the palette |
| `voc` | `VOCDataset` (VOC 2012 and SBD trainaug), finding VOC on disk, reading and checking files, class statistics |
| `transforms` | joint image/mask transforms keyed by (seed, epoch, index), the presets, ImageNet normalisation |
| `loader` | a seeded, DDP-aware sampler and a loader that knows its epoch |
| `cache` | a split preprocessed once into memory-mapped uint8 arrays |
| `download` | VOC and SBD from a list of sources, each copy checked by its MD5, resumed when broken |
| `synthetic`, `synthetic_shapes` | the generated VOC-format dataset and its 20 classes' shapes |
"""

__all__ = ["VOCDataset", "make_synthetic_voc"]


def __getattr__(name: str):
    """The public names, imported on first use: `deeplab_kit.data.classes` (which the torch-free
    configuration reads) must not pull torch in through this package (`--help` stays fast,
    benchmarks/bench_cli.py)."""
    if name == "VOCDataset":
        from deeplab_kit.data.voc import VOCDataset as found
    elif name == "make_synthetic_voc":
        from deeplab_kit.data.synthetic import make_synthetic_voc as found
    else:
        raise AttributeError(f"module 'deeplab_kit.data' has no attribute {name!r}")
    return found
