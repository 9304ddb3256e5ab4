"""Issue 31 item 5: splits are disjoint by content, not by path. A file symlink, a hard link, a linked class
folder or a byte-identical copy that puts one image in two splits is refused naming both paths."""
import os
import shutil

import pytest

from pand.config.schema import DataCfg
from pand.data import build_splits
from pand.errors import DataError


def _cfg(root):
    return DataCfg(name="imagefolder", root=str(root), val_fraction=0.2)


def _classes(root):
    return sorted(d.name for d in (root / "train").iterdir() if d.is_dir())


def test_the_fixture_itself_is_disjoint(imagefolder_root):
    root, expected = imagefolder_root
    s = build_splits(_cfg(root))
    assert len(s.train) == expected["train"] and len(s.test) == expected["test"]


def test_a_file_symlink_into_another_split_is_refused(imagefolder_root):
    root, _ = imagefolder_root
    c = _classes(root)[0]
    target = root / "val" / c / "img_1.png"
    os.symlink(os.path.join("..", "..", "val", c, "img_1.png"), root / "train" / c / "x.png")
    with pytest.raises(DataError, match=r"same image is in the (train and val|val and train) splits") as e:
        build_splits(_cfg(root))
    assert str(root / "train" / c / "x.png") in str(e.value) and str(target) in str(e.value)


def test_a_hard_link_between_val_and_test_is_refused(imagefolder_root):
    root, _ = imagefolder_root
    c = _classes(root)[1]
    os.link(root / "test" / c / "img_0.jpg", root / "val" / c / "linked.jpg")
    with pytest.raises(DataError, match=r"val and test splits: .*linked.jpg.* and .*img_0.jpg \(one file"):
        build_splits(_cfg(root))


def test_a_linked_class_folder_is_refused(imagefolder_root):
    root, _ = imagefolder_root
    c = _classes(root)[2]
    shutil.rmtree(root / "val" / c)
    os.symlink(os.path.join("..", "train", c), root / "val" / c)
    with pytest.raises(DataError, match=rf"same image is in the train and val splits.*{c}"):
        build_splits(_cfg(root))


def test_a_byte_identical_copy_in_the_test_split_is_refused(imagefolder_root):
    root, _ = imagefolder_root
    c = _classes(root)[0]
    shutil.copy2(root / "train" / c / "img_3.png", root / "test" / c / "copy.png")
    with pytest.raises(DataError, match=r"train and test splits: .*img_3.png and .*copy.png \(identical bytes\)"):
        build_splits(_cfg(root))


def test_a_hard_link_inside_train_cannot_leak_through_the_holdout(tmp_path):
    from pand.data.split_checks import check_disjoint_splits

    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(b"\x89PNG same")
    os.link(a, b)
    check_disjoint_splits("d", {"train": [(str(a), 0), (str(b), 0)], "val": None})  # one split: no leak
    with pytest.raises(DataError, match="train and val splits"):
        check_disjoint_splits("d", {"train": [(str(a), 0)], "val": [(str(b), 0)]})


def test_pand_train_dry_run_refuses_a_leak_with_exit_2(imagefolder_root, capsys):
    from pand.cli import main
    from pand.config import config_dir

    root, _ = imagefolder_root
    c = _classes(root)[0]
    os.link(root / "test" / c / "img_0.jpg", root / "train" / c / "leak.jpg")
    with pytest.raises(SystemExit) as e:
        main([str(config_dir() / "tiny.yaml"), "data=imagefolder", f"data.root={root}", "--dry-run"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "same image is in the train and test splits" in err and "Traceback" not in err
