"""ReaL labels by file name: entry i of timm's table belongs to ILSVRC2012_val_{i+1:08d}."""
import json
import pkgutil

from sweep.data.real_labels import real_columns, real_labels

TABLE = json.loads(pkgutil.get_data("timm.data", "_info/imagenet_real_labels.json"))


def test_file_name_to_entry_is_off_by_one():
    assert len(TABLE) == 50_000
    assert real_labels("/v/n01751748/ILSVRC2012_val_00000001.JPEG") == TABLE[0] == []  # the raters gave none
    assert real_labels("ILSVRC2012_val_00000002.JPEG") == TABLE[1] == [970, 795]
    assert real_labels("/x/ILSVRC2012_val_00050000.JPEG") == TABLE[49_999]
    assert real_labels("/x/ILSVRC2012_val_00050001.JPEG") is None  # out of range
    assert real_labels("/demo/circle/00001.png") is None


def test_columns():
    assert real_columns("ILSVRC2012_val_00000002.JPEG", 970, 3) == \
        {"real_labels": "970;795", "label_in_real": True, "prediction_in_real": False}
    assert real_columns("ILSVRC2012_val_00000002.JPEG", 1, 795) == \
        {"real_labels": "970;795", "label_in_real": False, "prediction_in_real": True}
    assert real_columns("ILSVRC2012_val_00000001.JPEG", 65, None) == \
        {"real_labels": "", "label_in_real": False, "prediction_in_real": ""}
    assert real_columns("a.png", 1, 2) == {"real_labels": "", "label_in_real": "", "prediction_in_real": ""}
