"""`export`: a trained run as ONNX, run by onnxruntime, agreeing with torch on any batch and size."""

import json

import numpy as np
import onnxruntime
import pytest
import torch

from deeplab_kit.cli import main
from deeplab_kit.export import ARGMAX_AGREEMENT, LOGIT_TOLERANCE, Shipped
from deeplab_kit.predict import load_predictor
from deeplab_kit.training.loop import train
from tests.conftest import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


def test_an_exported_run_runs_in_onnxruntime_as_in_torch(synthetic_root, tmp_path, capsys):
    run = tmp_path / "run"
    train(tiny_config("demo", data_root=str(synthetic_root)), run, progress=False)
    out = tmp_path / "shipped" / "model.onnx"
    assert main(["export", "--checkpoint", str(run), "--out", str(out)]) == 0
    assert "onnxruntime agrees with torch" in capsys.readouterr().out
    described = json.loads(out.with_suffix(".json").read_text())
    assert described["resize to"] == 32 and len(described["classes"]) == 21
    assert "0..255" in described["input"] and described["colours"][1] == [128, 0, 0]

    model, _, _ = load_predictor(run)
    shipped = Shipped(model).eval()
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for shape in ((3, 3, 48, 40), (1, 3, 200, 64)):  # other batches and sizes than the check's
        images = 255 * torch.rand(shape, generator=torch.Generator().manual_seed(1))
        logits = session.run(None, {"images": images.numpy()})[0]
        with torch.no_grad():
            expected = shipped(images).numpy()
        assert logits.shape == (shape[0], 21, *shape[2:])
        assert np.abs(logits - expected).max() <= LOGIT_TOLERANCE
        assert (logits.argmax(1) == expected.argmax(1)).mean() >= ARGMAX_AGREEMENT
