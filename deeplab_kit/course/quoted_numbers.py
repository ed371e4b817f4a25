"""Numbers quoted from the report, the paper and torchvision, with their sources: shown beside
the kit's own results, always labelled as quoted, never as measured.

    QUOTED_MIOU                      # mIoU from the paper, the report and torchvision
    REPORT_TABLE1                    # the report's Table 1 as it printed it
    PAPER_TABLE1, PAPER_TABLE2       # the paper's going-deeper tables
"""

from __future__ import annotations

import pandas as pd

# mIoU from the report, the paper and torchvision, each with its source (the last column); shown
# only as quoted reference rows, never as results of the kit. "setting" names the ablation
# setting (deeplab_kit.course.ablation.SETTINGS) whose rates and data (VOC val) they share, if any.
QUOTED_MIOU = pd.DataFrame(
    [
        (
            "paper",
            "paper",
            "ResNet-101, OS16, multi-grid (1, 2, 4), ASPP + image pooling",
            (6, 12, 18),
            77.21,
            "VOC 2012 val",
            "Chen et al. 2017, as quoted by public sources",
        ),
        (
            "report",
            "report",
            "the report's simplified ResNet-50 DeepLabv3, OS16, 256x256",
            (8, 12, 16),
            54.81695735,
            "VOC 2012 val",
            "the report's Table 1 (MyModel)",
        ),
        (
            "report",
            None,
            "torchvision's DeepLabv3-ResNet50 (COCO weights), frozen backbone",
            (12, 24, 36),
            64.648292905,
            "VOC 2012 val",
            "the report's Table 1 (Pretrained)",
        ),
        (
            "torchvision",
            None,
            "deeplabv3_resnet50 COCO_WITH_VOC_LABELS_V1, OS8",
            (12, 24, 36),
            66.4,
            "COCO val2017, the 20 VOC classes (not VOC val)",
            "torchvision's model documentation",
        ),
    ],
    columns=["source", "setting", "model", "rates", "mIoU (%)", "measured on", "quoted from"],
)


# The paper's "going deeper" tables (Chen et al. 2017, arXiv 1706.05587), ResNet-50 on PASCAL
# VOC 2012 val, as quoted by public sources; the cascaded model has no ASPP.
# Table 1: block7 at each output stride (256: no atrous convolution at all).
PAPER_TABLE1 = {8: 75.18, 16: 73.88, 32: 70.06, 64: 59.99, 128: 42.34, 256: 20.29}
# Table 2: output stride 16, by the last cascaded block (its block7 entry is Table 1's OS16;
# the report quotes these four).
PAPER_TABLE2 = {4: 64.81, 5: 72.14, 6: 74.29, 7: 73.88}


def going_deeper_quoted() -> pd.DataFrame:
    """The paper's Tables 1 and 2 as one table, labelled quoted."""
    rows = [("output stride", f"block7 OS{s}", v) for s, v in PAPER_TABLE1.items()]
    rows += [("cascaded blocks", f"block{b} OS16", v) for b, v in PAPER_TABLE2.items()]
    table = pd.DataFrame(rows, columns=["experiment", "setting", "mIoU (%) (quoted)"])
    table["quoted from"] = "Chen et al. 2017, Tables 1-2 (ResNet-50, VOC 2012 val)"
    return table


# The report's own Table 1 ("Table 1. Metrics vs Model"), as printed there: precision, recall
# and F1 in 0..1 (averaging not stated), mIoU in percent.
REPORT_TABLE1 = {
    "MyModel": {
        "Precision": 0.988730084,
        "Recall": 0.988600127,
        "F1 score": 0.982932866,
        "mIoU": 54.81695735,
    },
    "Pretrained": {
        "Precision": 0.9993286684,
        "Recall": 0.9987300842,
        "F1 score": 0.9984642873,
        "mIoU": 64.648292905,
    },
}


# The `report` recipe, setting by setting: stated by the report, or inferred from it (the sentence
# each comes from, quoted). The 16 x 16 map follows from two of them: 256 pixels at stride 16.
REPORT_SETTINGS = pd.DataFrame(
    [
        ("backbone", "ResNet-50", "stated", "leveraging the ResNet-50 backbone and ASPP module"),
        ("backbone weights", "ImageNet (torchvision)", "inferred",
         "The encoder network, typically based on a pre-trained CNN, extracts high-level features"
         " ... fine-tuning the DeepLabv3 ResNet50 model ... could only train the upper-level"
         " features"),
        ("output stride", "16", "inferred", "(none: the paper's training setting)"),
        ("feature map", "16 x 16", "inferred", "from 256 x 256 inputs at output stride 16"),
        ("ASPP rates", "(8, 12, 16)", "stated", "I utilized atrous rates of [8, 12, 16]"),
        ("input size", "256 x 256", "stated",
         "the input images are resized to a consistent resolution of 256x256 pixels"),
        ("optimiser", "Adam", "stated", "using the Adam optimizer and cross-entropy loss function"),
        ("learning rate", "1e-4", "inferred", "(none: Adam's usual rate for fine-tuning)"),
        ("batch size", "4", "stated", "multiple iterations with a batch size of 4"),
        ("epochs", "200, 20 a session", "stated",
         "over approximately 200 epochs ... a maximum of 20 epochs per session"),
        ("learning-rate step", "x 0.1 from epoch 100", "inferred",
         "6th session Training and validation loss after slicing learning rate by 10"),
    ],
    columns=["setting", "value", "stated or inferred", "the report says"],
)  # fmt: skip
