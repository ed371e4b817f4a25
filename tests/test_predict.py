"""`predict`: your own photos through a trained run, or torchvision's pretrained model."""

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms.v2 import functional as F_v2

from deeplab_kit.cli import main
from deeplab_kit.data.classes import VOC_PALETTE
from deeplab_kit.data.synthetic import make_voc_like_tree
from deeplab_kit.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from deeplab_kit.model import from_preset
from deeplab_kit.predict import load_predictor, predict_files
from deeplab_kit.training.loop import train
from tests.conftest import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train(tiny_config("demo", data_root=str(synthetic_root)), out, progress=False)
    return out


@pytest.fixture
def photos(tmp_path):
    """Three VOC-sized photos and one file that is not an image."""
    tree = make_voc_like_tree(tmp_path / "voc", {"val": 3})
    folder = tmp_path / "photos"
    folder.mkdir()
    for path in (tree / "VOCdevkit/VOC2012/JPEGImages").iterdir():
        path.rename(folder / path.name)
    (folder / "notes.jpg").write_text("not a picture")
    return folder


def test_predict_writes_palette_pngs_at_each_photo_s_size(run, photos, tmp_path, capsys):
    out = tmp_path / "predicted"
    assert main(["predict", "--checkpoint", str(run), "--out", str(out), str(photos)]) == 1
    said = capsys.readouterr()
    assert said.err.strip() == f"error: {photos / 'notes.jpg'}: not an image; skipped"
    assert "Traceback" not in said.err
    for photo in sorted(photos.glob("2012_*.jpg")):
        mask = Image.open(out / f"{photo.stem}.png")
        assert mask.mode == "P" and mask.size == Image.open(photo).size
        palette = np.array(mask.getpalette()[: 3 * 21]).reshape(21, 3)
        assert (palette == VOC_PALETTE[:21]).all()
        assert np.asarray(mask).max() < 21
        overlay = Image.open(out / f"{photo.stem}-overlay.png")
        assert overlay.size[1] == mask.size[1] and overlay.size[0] > 2 * mask.size[0]
    assert not (out / "notes.png").exists()


def test_predictions_follow_the_model_and_its_input_size(run, photos, tmp_path):
    predictor = load_predictor(run)
    model, size, classes = predictor
    assert size == 32 and classes.names[1] == "aeroplane"  # the run's, from its checkpoint
    first = sorted(photos.glob("2012_*.jpg"))[:1]
    report = predict_files(predictor, first, tmp_path, device="cpu")
    saved = np.asarray(Image.open(report.written[0]))
    photo = np.array(Image.open(sorted(photos.glob("2012_*.jpg"))[0]))
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    with torch.no_grad():  # the same prediction by hand: resize as the validation preset does
        rgb = torch.from_numpy(photo).permute(2, 0, 1)  # (3, H, W)
        x = F_v2.resize(rgb[None], [32, 32], antialias=True)  # the report preset's resize
        x = (x.float() / 255 - mean) / std
        scores = F.interpolate(model.eval()(x)["out"], size=rgb.shape[-2:], mode="bilinear")
    assert (saved == scores.argmax(1)[0].numpy()).mean() > 0.999


def test_torchvision_weights_from_a_saved_state_dict(tmp_path, photos):
    state = tmp_path / "deeplabv3_resnet50.pth"
    torch.manual_seed(0)
    torch.save(from_preset("torchvision", aux_loss=True).state_dict(), state)
    out = tmp_path / "tv"
    one = sorted(photos.glob("2012_*.jpg"))[0]
    assert main(["predict", "--weights", str(state), "--out", str(out), str(one)]) == 0
    assert Image.open(out / f"{one.stem}.png").size == Image.open(one).size


def test_predict_needs_one_model(tmp_path, capsys):
    assert main(["predict", "--out", str(tmp_path), "x.jpg"]) == 2
    said = capsys.readouterr().err
    assert "give one of --checkpoint RUN_OR_FILE and --weights torchvision" in said


def test_the_photo_widget_shows_an_upload(run, photos):
    from deeplab_kit.course.widgets import PhotoUpload

    widget = PhotoUpload(load_predictor(run))
    widget.show("notes.jpg", b"not a picture")
    assert widget.message.value == "notes.jpg: not an image"
    photo = sorted(photos.glob("2012_*.jpg"))[0]
    widget.show(photo.name, photo.read_bytes())
    shown = Image.open(io.BytesIO(widget.picture.value))
    assert shown.size[1] == Image.open(photo).size[1]


def test_a_huge_photo_gives_a_full_size_mask_and_a_bounded_overlay(run, tmp_path):
    """9000 x 9000 pixels (PIL's limit is about 89 megapixels): the class PNG at the photo's
    size, the overlay a viewing image of at most 2,000 pixels, the scores resized a strip at a
    time (never the 21 full-size maps: 6.8 GB)."""
    from deeplab_kit.predict import VIEW_SIDE, overlay, predict_image, upsampled_argmax

    model, size, _ = load_predictor(run)
    photo = Image.new("RGB", (9000, 9000), (120, 90, 60))
    labels = predict_image(model, photo, size)
    assert labels.shape == (9000, 9000) and labels.dtype == np.uint8
    view = overlay(photo, labels)
    assert max(view.size) <= VIEW_SIDE and view.size[0] > view.size[1]
    scores = torch.randn(3, 7, 5, generator=torch.Generator().manual_seed(0))
    whole = F.interpolate(scores[None], size=(23, 31), mode="bilinear")[0].argmax(0)
    assert (upsampled_argmax(scores, (23, 31), rows=4) == whole.numpy()).all()
