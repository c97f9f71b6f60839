"""ImageNet's classes in timm's order: the label of a synset directory, a class index's name.

Torch-free to import (the analysis reads labels and names with it): timm's class list is loaded on
first use.
"""
from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Optional

from sweep.errors import UserError

SYNSET = re.compile(r"^n\d{8}$")


def synset_label(path: str) -> Optional[int]:
    """Class index (timm's ImageNet order) of the synset directory in `path`, if any."""
    for part in reversed(Path(path).parts[:-1]):
        if SYNSET.match(part):
            if part not in _synset_indices():
                raise UserError(f"{path}: unknown ImageNet synset {part!r}")
            return _synset_indices()[part]
    return None


@functools.cache
def _synset_indices() -> dict[str, int]:
    from timm.data import ImageNetInfo
    return {name: index for index, name in enumerate(ImageNetInfo().label_names())}


@functools.cache
def class_names() -> tuple[str, ...]:
    """Each class's first name, by index."""
    from timm.data import ImageNetInfo
    info = ImageNetInfo()
    return tuple(info.index_to_description(i).split(",")[0] for i in range(1000))
