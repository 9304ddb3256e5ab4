"""pand-sweep end to end on the tiny config: two students x two precisions, then the resume (nothing trained again),
the budget choice on validation, an unmet budget, and an interrupted sweep that continues where it stopped.

About two minutes on a 2-core CPU (one Stage PSC, two Stage NSD runs, four exports, one sweep shared by the tests); in
`make test` because it is the acceptance test of pand-sweep."""
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from pand.config import config_dir, load_config
from pand.sweep.cli import cli
from pand.utils.io import sha256_file
from test_sweep_pareto import check_front


TINY = str(config_dir() / "tiny.yaml")
STUDENTS = ("resnet18", "mobilenet_v3_small")


def _args(root, *extra):
    return [TINY, "--students", ",".join(STUDENTS), "--precisions", "fp32,int8", "--max-batch", "4",
            "--threads", "1", "--calib-images", "16", "--parity-images", "0", "--export-args", "--plain-int8",
            "--warmup-ms", "0", "--iterations", "3", "--min-time", "0", "--run-dir", str(root / "sweep"), *extra,
            f"cache_dir={root / 'cache'}", "trainer.tensorboard=false", "data.synthetic.train_per_class=4",
            "data.synthetic.test_per_class=2", "data.synthetic.image_size=32", "student.image_size=32",
            "student.resize_size=36", "psc.epochs=1", "nsd.epochs=1", "nsd.batch_size=16"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    r = CliRunner().invoke(cli, _args(root))
    assert r.exit_code == 0, r.output + repr(r.exception)
    return root, json.loads((root / "sweep" / "sweep.json").read_text()), r.output


def _files(root):
    return {str(p): p.stat().st_mtime_ns for d in ("psc", "students", "bundles") for p in (root / d).rglob("*")
            if p.is_file()}


def _no_subprocess(monkeypatch, allow=()):
    """Fail on any child process (training, export) except those whose command line contains one of ``allow``."""
    calls = []
    real = subprocess.run

    def spy(args, *a, **k):
        calls.append(args)
        if not any(x in " ".join(map(str, args)) for x in allow):
            raise AssertionError(f"unexpected child process: {args}")
        return real(args, *a, **k)

    monkeypatch.setattr("pand.sweep.run.subprocess.run", spy)
    monkeypatch.setattr("pand.demo.runner.subprocess.run", spy)
    return calls


def _eligible(entries):
    return [e for e in entries if e["status"] == "ok" and e["valid"] is not False]


def test_sweep_json_fields_front_and_shared_anchors(sweep):
    root, payload, output = sweep
    entries = payload["entries"]
    assert [(e["student"], e["precision"]) for e in entries] == [(s, p) for s in STUDENTS for p in ("fp32", "int8")]
    artifact = (root / "sweep" / "psc" / "psc" / "learned_text_features.safetensors").resolve()
    assert payload["anchors"] == {"path": str(artifact), "sha256": sha256_file(artifact)}
    for e in entries:
        assert e["status"] == "ok", e
        assert 0.0 <= e["val_top1"] <= 1.0 and 0.0 <= e["test_top1"] <= 1.0
        assert e["parameters"] > 0 and e["flops"] == 2 * e["macs"] > 0
        assert 0 < e["p50_ms"] <= e["p99_ms"] and e["throughput"] > 0 and e["latency_batch"] == 1
        assert e["throughput_batch"] == 4 and e["device_key"] == payload["device_key"]
        assert e["anchors_sha256"] == payload["anchors"]["sha256"]
        # Stage PSC ran once: every student was trained with the shared artifact and has no PSC run of its own
        cfg = load_config(root / "sweep" / "students" / e["student"] / "config.yaml")
        assert Path(cfg.psc.artifact).resolve() == artifact and cfg.student.arch == e["student"]
        assert not (root / "sweep" / "students" / e["student"] / "psc").exists()
    by = {(e["student"], e["precision"]): e for e in entries}
    for s in STUDENTS:  # the int8 QDQ graph keeps the fp32 graph's convolutions: same MACs
        assert by[(s, "int8")]["macs"] == by[(s, "fp32")]["macs"]
    assert by[("resnet18", "fp32")]["parameters"] > by[("mobilenet_v3_small", "fp32")]["parameters"]
    check_front([(e["val_top1"], e["p50_ms"]) for e in entries], [e["pareto"] for e in entries])
    md = (root / "sweep" / "sweep.md").read_text()
    assert md.count("| resnet18 |") == 2 and "Pareto" in md
    assert (root / "sweep" / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert "Stage PSC (once" in output


def test_resume_trains_nothing_and_the_budget_is_chosen_on_validation(sweep, monkeypatch):
    root, first, _ = sweep
    ok = sorted(_eligible(first["entries"]), key=lambda e: e["p50_ms"])
    assert len(ok) >= 2  # the fp32 bundles always pass their parity gate
    budget = (ok[-1]["p50_ms"] + ok[-2]["p50_ms"]) / 2 if ok[-1]["p50_ms"] > ok[-2]["p50_ms"] else ok[-1]["p50_ms"]
    before = _files(root / "sweep")
    _no_subprocess(monkeypatch)
    r = CliRunner().invoke(cli, _args(root, "--budget-ms", str(budget)))
    assert r.exit_code == 0, r.output + repr(r.exception)
    assert _files(root / "sweep") == before  # nothing trained, exported or measured again
    assert r.output.count("(reused)") == 2 + 4
    payload = json.loads((root / "sweep" / "sweep.json").read_text())
    under = [e for e in _eligible(payload["entries"]) if e["p50_ms"] <= budget]
    best = max(e["val_top1"] for e in under)
    want = min((e for e in under if e["val_top1"] == best), key=lambda e: e["p50_ms"])
    rec = payload["recommendation"]
    assert rec["met"] and rec["chosen_on"] == "val_top1" and rec["chosen"]["bundle"] == want["bundle"]
    md = (root / "sweep" / "sweep.md").read_text()
    assert f"`{want['bundle']}`" in md and "chosen on validation" in md


def test_a_budget_no_bundle_meets_names_the_fastest(sweep, monkeypatch):
    root, first, _ = sweep
    _no_subprocess(monkeypatch)
    r = CliRunner().invoke(cli, _args(root, "--budget-ms", "0.000001"))
    assert r.exit_code == 2 and "no bundle meets the budget of 1e-06 ms" in r.output
    fastest = min(_eligible(first["entries"]), key=lambda e: e["p50_ms"])
    assert f"the fastest is {fastest['student']} {fastest['precision']}" in r.output
    assert "Traceback" not in r.output


def test_an_interrupted_sweep_continues_where_it_stopped(sweep, monkeypatch):
    root, first, _ = sweep
    # as if the sweep had stopped before its last bundle: only that bundle is exported and measured again
    last = root / "sweep" / "bundles" / "mobilenet_v3_small-int8"
    shutil.rmtree(last)
    for suffix in (".export.json", ".measure.json"):
        last.with_name(last.name + suffix).unlink(missing_ok=True)
    students = {str(p): p.stat().st_mtime_ns for p in (root / "sweep" / "students").rglob("*") if p.is_file()}
    calls = _no_subprocess(monkeypatch, allow=("pand_export.cli",))
    r = CliRunner().invoke(cli, _args(root))
    assert r.exit_code == 0, r.output + repr(r.exception)
    assert len(calls) == 1 and str(last) in " ".join(calls[0])
    assert {str(p): p.stat().st_mtime_ns for p in (root / "sweep" / "students").rglob("*") if p.is_file()} == students
    assert (last / "manifest.json").is_file()
