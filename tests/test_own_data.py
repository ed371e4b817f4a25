"""Your own dataset: class names and colours from a classes file, masks as RGB colours, class
indices or a palette, a void label of its own; trained, evaluated and predicted by name."""

import json

import numpy as np
import pytest
from PIL import Image

from deeplab_kit.cli import main
from deeplab_kit.data.classes import IGNORE_INDEX, read_classes
from deeplab_kit.data.synthetic import OWN_CLASSES, make_rgb_mask_set
from deeplab_kit.data.voc import VOCDataset, read_mask
from tests.conftest import tiny_options

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    return make_rgb_mask_set(tmp_path_factory.mktemp("own"), num_train=4, num_val=2, size=32)


def test_the_classes_file_names_the_classes_and_the_void_colour(own):
    classes = read_classes(own / "classes.txt")
    assert classes == OWN_CLASSES
    dataset = VOCDataset(own, split="val", transforms=None)
    assert dataset.classes == OWN_CLASSES
    _, mask = dataset.read_raw(0)
    rgb = np.asarray(Image.open(dataset.mask_paths[0]))
    assert set(np.unique(mask)) <= {0, 1, 2, 3, IGNORE_INDEX}
    assert (mask == IGNORE_INDEX).sum() == (rgb == 255).all(-1).sum()  # white is void


def test_index_masks_with_a_void_label_of_their_own(tmp_path):
    (tmp_path / "classes.txt").write_text("sky 0 0 255\nland 0 255 0\nvoid 0 0 0 9\n")
    classes = read_classes(tmp_path / "classes.txt")
    labels = np.array([[0, 1], [9, 1]], dtype=np.uint8)
    Image.fromarray(labels).save(tmp_path / "index.png")  # mode "L": class indices
    assert read_mask(tmp_path / "index.png", classes).tolist() == [[0, 1], [IGNORE_INDEX, 1]]
    with pytest.raises(ValueError, match=r"index2.png: labels \[7\] outside 0..1 and 255"):
        Image.fromarray(np.array([[7]], dtype=np.uint8)).save(tmp_path / "index2.png")
        read_mask(tmp_path / "index2.png", classes)


def test_an_unknown_colour_is_one_line_naming_the_file_the_colour_and_its_pixels(tmp_path):
    (tmp_path / "classes.txt").write_text("background 0 0 0\nroad 128 64 128\n")
    rgb = np.zeros((4, 5, 3), dtype=np.uint8)
    rgb[1:3, 1:4] = (10, 20, 30)  # 6 pixels in no class's colour
    Image.fromarray(rgb).save(tmp_path / "mask.png")
    with pytest.raises(ValueError) as error:
        read_mask(tmp_path / "mask.png", read_classes(tmp_path / "classes.txt"))
    message = str(error.value)
    assert (
        message
        == f"{tmp_path / 'mask.png'}: colour (10, 20, 30) on 6 pixels is not a class of the dataset's classes.txt"
    )
    (tmp_path / "classes.txt").write_text("background 0 0 0\nroad 128 64\n")
    with pytest.raises(ValueError, match=r"classes.txt, line 2: expected a name and three colour"):
        read_classes(tmp_path / "classes.txt")


def test_train_evaluate_and_predict_by_the_dataset_s_names(own, tmp_path, capsys):
    run = tmp_path / "run"
    options = tiny_options(atrous_rates=(1, 2), num_classes=4)
    argv = ["train", "--recipe", "demo", "--data", str(own), "--out", str(run), "--quiet"]
    assert main([*argv, *options]) == 0
    assert (
        main(
            [
                "train",
                "--recipe",
                "demo",
                "--data",
                str(own),
                "--out",
                str(tmp_path / "x"),
                "--quiet",
                *tiny_options(),
            ]
        )
        == 2
    )
    assert (
        "the dataset has 4 classes (background, plane, bottle, cat) but the run's num_classes is 21: pass --num-classes 4"
        in capsys.readouterr().err
    )
    scored = tmp_path / "scored"
    assert (
        main(
            [
                "evaluate",
                "--data",
                str(own),
                "--checkpoint",
                str(run),
                "--out",
                str(scored),
                "--quiet",
            ]
        )
        == 0
    )
    per_class = (scored / "per_class.csv").read_text()
    assert all(name in per_class for name in OWN_CLASSES.names)
    assert json.loads((scored / "metrics.json").read_text())["class names"] == list(
        OWN_CLASSES.names
    )
    photo = own / "VOCdevkit/VOC2012/JPEGImages/val_00000.jpg"
    predicted = tmp_path / "predicted"
    assert main(["predict", "--checkpoint", str(run), "--out", str(predicted), str(photo)]) == 0
    mask = Image.open(predicted / "val_00000.png")
    palette = np.array(mask.getpalette()[: 3 * 4]).reshape(4, 3)
    assert palette.tolist() == [
        list(c) for c in OWN_CLASSES.colours
    ]  # no data needed: the checkpoint's


def test_the_command_line_writes_the_example_of_your_own_data(tmp_path, capsys):
    root = tmp_path / "own"
    assert main(["synth", "--rgb-masks", "--out", str(root), "--train", "2", "--val", "1"]) == 0
    assert "RGB-mask set with classes.txt" in capsys.readouterr().out
    assert read_classes(root / "classes.txt") == OWN_CLASSES
    mask = root / "VOCdevkit" / "VOC2012" / "SegmentationClass" / "train_00000.png"
    assert Image.open(mask).mode == "RGB"
    labels = VOCDataset(root, split="train", transforms=None).read_raw(0)[1]
    assert set(np.unique(labels)) <= {0, 1, 2, 3, IGNORE_INDEX}
