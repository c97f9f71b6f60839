"""ReaL labels (Beyer et al. 2020, "Are we done with ImageNet?"): the set of labels human raters
found correct for each ImageNet validation image. timm ships them (`timm/data/_info/
imagenet_real_labels.json`); entry i belongs to `ILSVRC2012_val_{i+1:08d}`.

Many ImageNet "mistakes" are label errors or images of several objects. A mistake is *clean* when
its label is among the image's ReaL labels and the model's prediction is not; every other mistake
is *flagged*.
"""
from __future__ import annotations

import functools
import json
import pkgutil
import re
from pathlib import Path
from typing import Optional

VALIDATION_IMAGE = re.compile(r"ILSVRC2012_val_(\d{8})")


@functools.cache
def _table() -> list[list[int]]:
    return json.loads(pkgutil.get_data("timm.data", "_info/imagenet_real_labels.json").decode("utf-8"))


def real_labels(path: str) -> Optional[list[int]]:
    """The ReaL labels of an ImageNet validation image, recognised by its file name (an empty list
    when the raters gave none); None for any other file."""
    match = VALIDATION_IMAGE.search(Path(path).name)
    if match is None:
        return None
    index = int(match.group(1)) - 1  # ILSVRC2012_val_00000001 is entry 0
    table = _table()
    return list(table[index]) if 0 <= index < len(table) else None


def real_columns(path: str, label: int, prediction: Optional[int]) -> dict:
    """The results row's ReaL columns: `real_labels` ("417;418"), `label_in_real`,
    `prediction_in_real`; empty where the image has no ReaL entry (not an ImageNet validation image)."""
    labels = real_labels(path)
    if labels is None:
        return {"real_labels": "", "label_in_real": "", "prediction_in_real": ""}
    return {"real_labels": ";".join(map(str, labels)), "label_in_real": label in labels,
            "prediction_in_real": "" if prediction is None else prediction in labels}
