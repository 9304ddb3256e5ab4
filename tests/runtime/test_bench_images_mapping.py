"""Issue 31 item 7: pand-bench --images maps folders to the bundle's classes by name (after training's folder-name
normalisation); an unmapped folder is an error listing it and the class names, never a silent fallback to sorted
order; --label-order sorted is an explicit opt-in, shown in the table."""
import json
import shutil
import unicodedata
from dataclasses import asdict

import numpy as np
import pytest

from pand_runtime.bench import bench_bundle, main
from pand_runtime.bench_accuracy import load_image_folder
from pand_runtime.bench_rows import BenchOptions
from pand_runtime.errors import PandError
from pand_runtime.predictor import Predictor

FAST = ["--iterations", "2", "--min-time", "0", "--warmup-ms", "1", "--threads", "1"]


def _bench(args, tmp_path, capsys):
    try:
        main([*args, *FAST, "--json", str(tmp_path / "b.json"), "--markdown", str(tmp_path / "b.md")])
        code = 0
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out + out.err


def _folder(rt_bundle, root, name_of):
    """One image per class (the bundle's parity images), in folders named ``name_of(class name)``."""
    p = Predictor.from_bundle(rt_bundle)
    ref = p.reference()
    done = set()
    for path, label in zip(ref["paths"], ref["labels"]):
        if int(label) in done:
            continue
        done.add(int(label))
        d = root / name_of(p.class_names[int(label)])
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, d)
    for name in p.class_names:  # a folder for every class (those without a parity image stay empty)
        (root / name_of(name)).mkdir(parents=True, exist_ok=True)
    return p, done


def test_folders_named_in_another_case_are_an_error_not_a_sorted_fallback(rt_bundle, tmp_path, capsys):
    p, _ = _folder(rt_bundle, tmp_path / "images", str.upper)
    # one folder per class: the old code fell back to sorted order and reported a wrong top-1 with status ok
    assert len(list((tmp_path / "images").iterdir())) == len(p.class_names)
    code, out = _bench([str(rt_bundle), "--images", str(tmp_path / "images")], tmp_path, capsys)
    assert code == 3 and not (tmp_path / "b.json").exists(), out  # every row failed: nothing written
    row = asdict(bench_bundle(rt_bundle, BenchOptions(images=tmp_path / "images", iterations=2, min_time=0,
                                                      warmup_ms=0))[0])
    assert row["status"] == "error" and row["top1"] is None, out
    assert "match no class of the bundle" in row["reason"] and repr(sorted(c.upper() for c in p.class_names)[0]) in row["reason"]
    assert repr(p.class_names[0]) in row["reason"] and "--label-order sorted" in row["reason"]
    assert "Traceback" not in out


def test_label_order_sorted_is_an_explicit_opt_in_shown_in_the_table(rt_bundle, tmp_path, capsys):
    _folder(rt_bundle, tmp_path / "images", lambda n: f"{n.upper()}")
    code, out = _bench([str(rt_bundle), "--images", str(tmp_path / "images"), "--label-order", "sorted"], tmp_path,
                       capsys)
    assert code == 0 and "top-1 with --label-order sorted" in out, out
    row = json.loads((tmp_path / "b.json").read_text())["rows"][0]
    assert "--label-order sorted" in row["eval_source"]


def test_names_match_after_the_training_normalisation(tmp_path):
    names = ["Black footed Albatross", "Caf\u00e9 bird"]
    for folder in ("001.Black_footed_Albatross", unicodedata.normalize("NFD", "002.Caf\u00e9_bird")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "a.png").write_bytes(b"x")
    paths, labels, note = load_image_folder(tmp_path, names)
    assert sorted(labels.tolist()) == [0, 1] and note == "folder names = class names"
    (tmp_path / "black footed albatross").mkdir()
    with pytest.raises(PandError, match=r"1 of 3 folders match no class of the bundle: 'black footed albatross'"):
        load_image_folder(tmp_path, names)


def test_a_slash_in_a_class_name_cannot_be_matched_silently(tmp_path):
    names = ["AC/DC", "Other"]
    for folder in ("AC_DC", "Other"):
        (tmp_path / folder).mkdir()
    with pytest.raises(PandError, match=r"'AC_DC'.*'AC/DC'"):
        load_image_folder(tmp_path, names)
    _, labels, _ = load_image_folder(tmp_path, names, "sorted")  # the opt-in: sorted folders = labels
    assert labels.size == 0 and np.asarray(labels).dtype == np.int64
