"""pand-bench never reports success it did not measure (issue #20 items 2 and 14): the --compare baseline is read
first and never overwritten, --batch 0 is refused, an all-failed run exits non-zero, an --images error is shown, and
--compare matches rows on the model's sha256 and fails when nothing could be compared or the file is not JSON."""
import json
import shutil

import pytest

from pand_runtime.bench import bench_bundle, main
from pand_runtime.bench_rows import BenchOptions

FAST = ["--iterations", "3", "--min-time", "0", "--warmup-ms", "1", "--threads", "1"]


def _bench(args, capsys, out_dir=None):
    extra = [] if out_dir is None else ["--json", str(out_dir / "b.json"), "--markdown", str(out_dir / "b.md")]
    try:
        main([*args, *FAST, *extra])
        code = 0
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out + out.err


def test_compare_never_overwrites_the_baseline(rt_bundle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out = _bench([str(rt_bundle), "--output", "."], capsys)  # writes ./pand-bench.json
    assert code == 0, out
    baseline = (tmp_path / "pand-bench.json").read_bytes()
    (tmp_path / "sub").mkdir()
    for spelling in ("pand-bench.json", "sub/../pand-bench.json", str(tmp_path / "pand-bench.json")):
        code, out = _bench([str(rt_bundle), "--output", ".", "--compare", spelling], capsys)  # --json: the same file
        assert code == 2 and "is the --compare baseline; the results would overwrite it" in out, out
        assert "no regression" not in out
        assert (tmp_path / "pand-bench.json").read_bytes() == baseline
    code, out = _bench([str(rt_bundle), "-o", ".", "--compare", "pand-bench.json", "--markdown", "pand-bench.json",
                        "--json", "new.json"], capsys)
    assert code == 2 and "--markdown pand-bench.json is the --compare baseline" in out
    assert (tmp_path / "pand-bench.json").read_bytes() == baseline and not (tmp_path / "new.json").exists()


def test_batch_zero_is_refused(rt_bundle, tmp_path, capsys):
    code, out = _bench([str(rt_bundle), "--batch", "0"], capsys, tmp_path)
    assert code == 2 and "--batch" in out and "0 is not in the range x>=1" in out, out
    assert not (tmp_path / "b.json").exists()
    rows = bench_bundle(rt_bundle, BenchOptions(batches=(0, 1), iterations=2, min_time=0, warmup_ms=0))
    assert [(r.batch, r.status) for r in rows] == [(0, "error"), (1, "ok")]
    assert "batch size must be >= 1" in rows[0].reason and rows[0].throughput is None


def test_a_run_where_every_row_failed_exits_non_zero(tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    code, out = _bench([str(broken), "--batch", "1", "--batch", "2"], capsys, tmp_path)
    assert code == 3 and "every row failed (2 of 2)" in out, out
    assert out.count("error: load:") == 2, out  # the table still says why, on the console
    # nothing measured, nothing written (issue #29): neither the results nor a bench/ folder in the failed input
    assert not (tmp_path / "b.json").exists() and not (tmp_path / "b.md").exists()
    code, out = _bench([str(broken)], capsys)
    assert code == 3 and not (broken / "bench").exists() and not any(broken.iterdir())


def test_images_error_is_shown_not_replaced_by_parity_accuracy(rt_bundle, tmp_path, capsys):
    folder = tmp_path / "images"
    (folder / "not_a_class").mkdir(parents=True)
    code, out = _bench([str(rt_bundle), "--images", str(folder)], capsys, tmp_path)
    assert code == 3, out  # the only row failed (so nothing is written)
    assert f"error: --images {folder}" in out and not (tmp_path / "b.json").exists()
    row = bench_bundle(rt_bundle, BenchOptions(images=folder, iterations=2, min_time=0, warmup_ms=0))[0]
    assert row.status == "error" and row.reason.startswith(f"--images {folder}: 1 of 1 folders match no class")
    assert row.top1 is None and row.n_eval == 0 and row.agreement is None


def _baseline(rt_bundle, tmp_path, capsys):
    code, out = _bench([str(rt_bundle)], capsys, tmp_path)
    assert code == 0, out
    base = json.loads((tmp_path / "b.json").read_text())
    assert len(base["rows"][0]["model_sha256"]) == 64
    base["rows"][0]["p50_ms"] *= 1e4  # far slower than any rerun: only a mismatch can fail the comparison
    return base


def test_compare_with_no_matching_row_is_not_no_regression(rt_bundle, tmp_path, capsys):
    base = _baseline(rt_bundle, tmp_path, capsys)
    base["rows"][0].update(name="other", model_sha256="0" * 64, key="other/onnxruntime/fp32/b1")
    (tmp_path / "base.json").write_text(json.dumps(base))
    code, out = _bench([str(rt_bundle), "--compare", str(tmp_path / "base.json")], capsys, tmp_path)
    assert code == 1 and "nothing was compared" in out and "no regression" not in out, out


def test_compare_matches_rows_on_the_model_hash(rt_bundle, tmp_path, capsys):
    base = _baseline(rt_bundle, tmp_path, capsys)
    (tmp_path / "base.json").write_text(json.dumps(base))
    renamed = tmp_path / "renamed"
    shutil.copytree(rt_bundle, renamed)  # same model, another folder name: still compared
    code, out = _bench([str(renamed), "--compare", str(tmp_path / "base.json")], capsys, tmp_path)
    assert code == 0 and "no regression" in out, out
    base["rows"][0]["model_sha256"] = "f" * 64  # the folder of that name held another model when the baseline ran
    (tmp_path / "base.json").write_text(json.dumps(base))
    code, out = _bench([str(rt_bundle), "--compare", str(tmp_path / "base.json")], capsys, tmp_path)
    assert code == 1 and "a different model than in the baseline" in out and "no regression" not in out, out


@pytest.mark.parametrize("content, msg", [
    ("not json at all", "is not a readable pand-bench JSON file (JSONDecodeError"),
    ("[1, 2]", "is JSON but not a pand-bench result"),
    ('{"rows": 3}', "is JSON but not a pand-bench result"),
])
def test_compare_file_that_is_not_a_bench_json_is_a_clear_error(rt_bundle, tmp_path, capsys, content, msg):
    bad = tmp_path / "base.json"
    bad.write_text(content)
    code, out = _bench([str(rt_bundle), "--compare", str(bad)], capsys, tmp_path)
    assert code == 2 and msg in out and "Traceback" not in out, out
    assert not (tmp_path / "b.json").exists()  # checked before anything ran
