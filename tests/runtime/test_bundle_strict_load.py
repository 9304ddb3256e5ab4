"""Issue 31 item 11: bundle loading is bounded and strict. A symlinked, oversized or too deeply nested manifest, an
object-dtype reference.npz, an image_size or num_classes that disagrees with the model: each is an ArtifactError
naming the field when the bundle is loaded (pand-bench: a failed row, no traceback), never a raw library error or a
benchmark that reports "ok"."""
import json
from dataclasses import asdict

import numpy as np
import pytest

from pand_runtime.bench import bench_bundle, main as bench_main
from pand_runtime.bench_rows import BenchOptions
from pand_runtime.errors import ArtifactError
from pand_runtime.manifest import load_manifest
from pand_runtime.predictor import Predictor

FAST = ["--iterations", "2", "--min-time", "0", "--warmup-ms", "1", "--threads", "1"]


def _edit(bundle, fn):
    path = bundle / "manifest.json"
    m = json.loads(path.read_text())
    fn(m)
    path.write_text(json.dumps(m))


def _bench_rows(bundle, tmp_path, capsys):
    """pand-bench's exit code (no traceback; nothing written when every row failed) and the rows it measured."""
    try:
        bench_main([str(bundle), *FAST, "--json", str(tmp_path / "b.json"), "--markdown", str(tmp_path / "b.md")])
        code = 0
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    if code == 3:  # every row failed: the rows are printed, not written
        assert not (tmp_path / "b.json").exists()
        rows = bench_bundle(bundle, BenchOptions(iterations=2, min_time=0, warmup_ms=1, threads=1))
        return code, [asdict(r) for r in rows]
    return code, json.loads((tmp_path / "b.json").read_text())["rows"]


def test_object_dtype_reference_is_an_artifact_error(bundle_copy, tmp_path, capsys):
    ref = bundle_copy / "reference.npz"
    with np.load(ref) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["labels"] = arrays["labels"].astype(object)
    np.savez(ref, **arrays)
    p = Predictor.from_bundle(bundle_copy, verify=False)
    with pytest.raises(ArtifactError, match=r"field 'labels' cannot be read without unpickling"):
        p.reference()
    code, rows = _bench_rows(bundle_copy, tmp_path, capsys)
    assert code == 3 and rows[0]["status"] == "error" and "field 'labels'" in rows[0]["reason"]


def test_reference_arrays_of_the_wrong_shape_are_named(bundle_copy):
    ref = bundle_copy / "reference.npz"
    with np.load(ref) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["logits"] = arrays["logits"][:, :-1]
    np.savez(ref, **arrays)
    with pytest.raises(ArtifactError, match=r"field 'logits' must be float of shape \(\d+, 24\)"):
        Predictor.from_bundle(bundle_copy).reference()


def test_manifest_image_size_that_disagrees_with_the_model_is_named(bundle_copy):
    def smaller(m):
        m["preprocess"]["image_size"] = 40
        m["inputs"][0]["shape"] = ["batch", 3, 40, 40]  # a consistent manifest, another model
    _edit(bundle_copy, smaller)
    with pytest.raises(ArtifactError, match=r"preprocess.image_size=40, but the model takes input"):
        Predictor.from_bundle(bundle_copy)


def test_num_classes_off_by_one_is_refused_at_load_not_benched_ok(bundle_copy, tmp_path, capsys):
    def fewer(m):
        m["class_names"] = m["class_names"][:-1]
        m["num_classes"] = len(m["class_names"])
        m["outputs"][0]["shape"] = ["batch", m["num_classes"]]
    _edit(bundle_copy, fewer)
    with pytest.raises(ArtifactError, match=r"num_classes=23, but the model outputs .*24 classes"):
        Predictor.from_bundle(bundle_copy)
    code, rows = _bench_rows(bundle_copy, tmp_path, capsys)
    assert code == 3 and rows[0]["status"] == "error" and "num_classes=23" in rows[0]["reason"]


def test_deeply_nested_manifest_is_an_artifact_error(bundle_copy):
    _edit(bundle_copy, lambda m: m.update(export_args={"x": 1}))
    text = (bundle_copy / "manifest.json").read_text()
    deep = "[" * 100_000 + "]" * 100_000
    (bundle_copy / "manifest.json").write_text(text.replace('{"x": 1}', deep))
    with pytest.raises(ArtifactError, match="nested too deeply"):
        load_manifest(bundle_copy)
    (bundle_copy / "manifest.json").write_text(text.replace('{"x": 1}', "[" * 40 + "]" * 40))
    with pytest.raises(ArtifactError, match="nested too deeply"):
        load_manifest(bundle_copy)


def test_oversized_manifest_is_refused_without_parsing(bundle_copy):
    path = bundle_copy / "manifest.json"
    path.write_text(path.read_text() + " " * (1 << 21))  # still valid JSON, 2 MB (the cap is 1 MB)
    with pytest.raises(ArtifactError, match=r"larger than 1048576 bytes"):
        load_manifest(bundle_copy)


def test_symlinked_manifest_is_refused(bundle_copy, tmp_path):
    real = tmp_path / "elsewhere.json"
    (bundle_copy / "manifest.json").rename(real)
    (bundle_copy / "manifest.json").symlink_to(real)
    with pytest.raises(ArtifactError, match="manifest.json is a symbolic link"):
        load_manifest(bundle_copy)
