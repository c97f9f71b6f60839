"""A data set's class names, from the data itself: a `classes.txt` beside its images (one name a line,
in label order; the demo universe writes its own), else ImageNet's, in timm's order. Torch-free: the
analysis names the classes in its galleries and explorer."""
from __future__ import annotations

import functools
from pathlib import Path

from sweep.data.imagenet_classes import class_names as imagenet_class_names

CLASSES_TXT = "classes.txt"
LEVELS = 3  # folders above an image where its data set's classes.txt may be (<root>/<split>/<class>/<image>)


@functools.cache
def _listed(folder: Path) -> tuple[str, ...] | None:
    path = folder / CLASSES_TXT
    return tuple(path.read_text().splitlines()) if path.is_file() else None


def names_for(image: str, data: str | None) -> tuple[str, ...] | None:
    """The class names of the data set an image belongs to: its classes.txt, found in one of the LEVELS
    folders above the image, else ImageNet's (the original scripts' outputs name no data: theirs are
    ImageNet's); None for a demo universe built before it wrote its class names."""
    for folder in list(Path(image).parents)[:LEVELS]:
        names = _listed(folder)
        if names is not None:
            return names
    return imagenet_class_names() if data != "demo" else None


def class_name(index, image: str, data: str | None) -> str:
    """A class index of `image`'s data set in words (the index itself where the data names no classes)."""
    if index is None or (isinstance(index, float) and index != index):
        return "?"
    index = int(index)
    names = names_for(image, data)
    return names[index] if names is not None and 0 <= index < len(names) else str(index)
