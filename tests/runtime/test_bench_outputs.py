"""Issue 31, items 3 and 10: outputs never overwrite inputs, numbers are range-checked before work starts, and an
unwritable result location is a user error (exit 2, no traceback) found before the benchmark runs."""
import errno
import tempfile

import pytest

from pand_runtime.bench import main as bench_main

FAST = ["--iterations", "2", "--min-time", "0", "--warmup-ms", "1", "--threads", "1"]


def _call(entry, args, capsys):
    try:
        entry(args)
        code = 0
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out + out.err


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_bench_json_inside_the_bundle_is_refused_but_its_bench_folder_is_allowed(bundle_copy, tmp_path, capsys):
    before = _snapshot(bundle_copy)
    for opt, target in (("--json", "manifest.json"), ("--markdown", "manifest.json"), ("--json", "new.json")):
        other = "--markdown" if opt == "--json" else "--json"
        code, out = _call(bench_main, [str(bundle_copy), *FAST, opt, str(bundle_copy / target),
                                       other, str(tmp_path / "other.x")], capsys)
        assert code == 2 and "inside the bundle" in out and "Traceback" not in out, out
        assert "p50" not in out  # refused before anything ran
    assert _snapshot(bundle_copy) == before
    code, out = _call(bench_main, [str(bundle_copy), *FAST, "--json", str(bundle_copy / "bench" / "r.json"),
                                   "--markdown", str(bundle_copy / "bench" / "r.md")], capsys)
    assert code == 0 and (bundle_copy / "bench" / "r.json").is_file(), out
    assert _snapshot(bundle_copy) == before


def test_bench_output_equal_to_an_input_file_is_refused(bundle_copy, tmp_path, capsys):
    code, out = _call(bench_main, [str(bundle_copy), *FAST, "--json", str(tmp_path / "a.json"),
                                   "--markdown", str(tmp_path / "a.json")], capsys)
    assert code == 2 and "name the same file" in out, out


def test_bench_read_only_result_folder_is_exit_2_before_the_benchmark(bundle_copy, tmp_path, capsys, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    real = tempfile.mkstemp

    def mkstemp(*a, dir=None, **k):  # a read-only mount: no file can be created in ro/ (root ignores chmod)
        if dir is not None and str(dir).startswith(str(ro)):
            raise OSError(errno.EROFS, "Read-only file system", str(dir))
        return real(*a, dir=dir, **k)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    code, out = _call(bench_main, [str(bundle_copy), *FAST, "--json", str(ro / "r.json"),
                                   "--markdown", str(tmp_path / "r.md")], capsys)
    assert code == 2 and "Read-only file system" in out and "Traceback" not in out, out
    assert "--resume" not in out and "p50" not in out  # no training advice, nothing was benchmarked
    assert not (tmp_path / "r.md").exists()


@pytest.mark.parametrize("bad", [["--min-agreement", "1.01"], ["--min-agreement", "-0.5"], ["--parity-images", "-5"],
                                 ["--threads", "-1"], ["--max-acc-drop", "-0.1"]])
def test_export_impossible_numbers_are_refused_and_the_bundle_kept(rt_run_dir, bundle_copy, bad, capsys):
    from pand_export.cli import main as export_main

    before = _snapshot(bundle_copy)
    code, out = _call(export_main, [str(rt_run_dir), "--format", "onnx", "--output", str(bundle_copy), *bad],
                      capsys)
    assert code == 2 and bad[0] in out and "Traceback" not in out, out
    assert _snapshot(bundle_copy) == before


def test_export_options_ranges_hold_for_the_python_api():
    from pand_export.exporter import ExportOptions, validate_options
    from pand_runtime.errors import PandError

    with pytest.raises(PandError, match=r"--min-agreement 1.01 is out of range"):
        validate_options(ExportOptions(format="onnx", min_agreement=1.01))
    with pytest.raises(PandError, match="--parity-images"):
        validate_options(ExportOptions(format="onnx", parity_images=-5))
