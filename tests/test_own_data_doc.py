"""docs/own-data.md, run as written on a tiny ImageFolder of generated PNGs (issue #29, acceptance).

Every ``bash`` command and the ``python`` block of the page run in order, in-process, in a scratch folder, with four
documented substitutions and nothing else:

* the placeholders ``/data/my_images`` and ``/mnt/moved/my_images`` become scratch folders; before the first
  command that names the moved folder the data set is *moved* there, so the original ``data.root`` is gone;
* ``pand-train`` gets :data:`TINY` (2 epochs of a ResNet-18 from scratch at 32 px, CPU, a higher learning rate so
  that 6 steps learn something) appended;
* ``pand-bench`` gets :data:`FAST` (few timed runs, no torch.compile): timings are not what is tested;
* ``scp -r SRC device:DIR`` is a local copy to ``DIR``; ``pip install`` (the device's setup) is skipped.

Then the tests check what the issue asks: the printed per-epoch and final lines, ``curves.png``, file modes 0644/0755
under umask 022, ``--resume`` on the finished run changes no file, the export from the moved copy with ``--data-root``,
``pand-bench --output``, one top-1 per split (``summary.json`` test top-1 == the bench's full-test-split top-1, PyTorch
and bundle rows on the same images), and the Python API predicting what the bundle predicts.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "own-data.md"
CLASSES = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (50, 60, 210)}
SPLITS = {"train": 8, "val": 3, "test": 4}
TINY = ["student.pretrained=false", "student.image_size=32", "student.resize_size=36", "nsd.epochs=2",
        "nsd.batch_size=8", "nsd.lr=3e-3", "trainer=cpu", "trainer.tensorboard=false"]
FAST = ["--iterations", "2", "--min-time", "0", "--warmup-ms", "0", "--threads", "1", "--no-compile"]
SKIPPED = ("pip",)


def write_images(root: Path) -> None:
    """A tiny, learnable ImageFolder: 3 colour classes, 40x40 noisy PNGs, train/val/test."""
    rng = np.random.default_rng(0)
    for split, n in SPLITS.items():
        for name, rgb in CLASSES.items():
            for k in range(n):
                a = np.clip(np.asarray(rgb)[None, None] + rng.normal(0, 40, (40, 40, 3)), 0, 255).astype(np.uint8)
                path = root / split / name / f"{k}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(a).save(path)


def doc_steps(text: str):
    """``[(kind, payload)]`` in page order: ``("bash", argv)`` per command line, ``("python", source)`` per block."""
    steps = []
    for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M):
        if lang == "bash":
            steps += [("bash", shlex.split(line)) for line in body.splitlines()
                      if line.strip() and not line.lstrip().startswith("#")]
        elif lang == "python":
            steps.append(("python", body))
    return steps


def tree_hashes(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _call(main, argv) -> int:
    try:
        main(argv)
    except SystemExit as e:
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    return 0


@pytest.fixture(scope="module")
def doc_run(tmp_path_factory):
    from pand.cli import main as train_main
    from pand_export.cli import main as export_main
    from pand_runtime.bench import main as bench_main

    work = tmp_path_factory.mktemp("own-data")
    data, moved = work / "data" / "my_images", work / "mnt" / "moved" / "my_images"
    write_images(data)
    subst = {"/data/my_images": str(data), "/mnt/moved/my_images": str(moved),
             "configs/imagefolder_quickstart.yaml": str(REPO / "configs" / "imagefolder_quickstart.yaml")}

    def sub(s: str) -> str:
        for k, v in subst.items():
            s = s.replace(k, v)
        return s

    old_cwd, old_mask = os.getcwd(), os.umask(0o022)
    os.chdir(work)
    results = {"steps": [], "work": work, "data": data, "moved": moved}
    try:
        for kind, payload in doc_steps(DOC.read_text(encoding="utf-8")):
            text = payload if kind == "python" else " ".join(payload)
            if "/mnt/moved/my_images" in text and not moved.exists():
                moved.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(data), str(moved))
            out = io.StringIO()
            before = None
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                if kind == "python":
                    exec(compile(sub(payload), str(DOC), "exec"), {"__name__": "own_data_doc"})
                    code = 0
                else:
                    argv = [sub(a) for a in payload]
                    prog, args = argv[0], argv[1:]
                    if prog == "pand-train":
                        if "--resume" in args:
                            before = tree_hashes(work / "runs" / "quickstart")
                        code = _call(train_main, [args[0], *args[1:], *TINY, f"cache_dir={work / 'cache'}"])
                    elif prog == "pand-export":
                        code = _call(export_main, args)
                    elif prog == "pand-bench":
                        code = _call(bench_main, [*args, *FAST])
                    elif prog == "scp":
                        src, dest = args[-2], work / args[-1].split(":", 1)[1]
                        dest.mkdir(parents=True, exist_ok=True)
                        shutil.copytree(src, dest / Path(src).name)
                        code = 0
                    elif prog in SKIPPED:
                        code = None
                    else:
                        raise AssertionError(f"docs/own-data.md runs {prog!r}, which this test does not know")
            step = {"kind": kind, "text": text, "code": code, "out": out.getvalue()}
            if before is not None:
                step["hashes"] = (before, tree_hashes(work / "runs" / "quickstart"))
            results["steps"].append(step)
    finally:
        os.chdir(old_cwd)
        os.umask(old_mask)
    return results


def _step(doc_run, prefix: str, nth: int = 0) -> dict:
    hits = [s for s in doc_run["steps"] if s["text"].startswith(prefix)]
    assert len(hits) > nth, f"docs/own-data.md has no step {prefix!r}"
    return hits[nth]


def test_every_command_of_the_page_runs(doc_run):
    ran = [(s["text"].split()[0], s["code"]) for s in doc_run["steps"]]
    assert [p for p, c in ran if c is None] == list(SKIPPED)  # only the device's pip install is skipped
    bad = [s for s in doc_run["steps"] if s["code"] not in (0, None)]
    assert not bad, "\n\n".join(f"{s['text']} -> {s['code']}\n{s['out'][-3000:]}" for s in bad)
    programs = {p for p, _ in ran}
    assert {"pand-train", "pand-export", "pand-bench", "scp", "pip"} <= programs
    assert any(s["kind"] == "python" for s in doc_run["steps"])


def test_training_prints_a_line_per_epoch_and_a_final_block(doc_run):
    out = _step(doc_run, "pand-train configs/imagefolder_quickstart.yaml data.root=/data/my_images", 1)["out"]
    run = Path("runs") / "quickstart"
    lines = out.splitlines()
    for e in (1, 2):  # 1-based, like the bars
        assert any(re.match(rf"epoch {e}/2  loss \d+\.\d{{4}}  val top-1 \d+\.\d\d% \(best \d+\.\d\d% @ epoch [12]\)  "
                            rf"lr \d\.\d\de-\d\d  \d+ img/s$", ln) for ln in lines), out
    summary = json.loads((doc_run["work"] / run / "summary.json").read_text())
    best = summary["best_epoch"]
    assert f"  best epoch:  {best + 1} of 2 (files store it 0-based: best_epoch={best})" in lines
    assert f"  val top-1:   {100 * summary['val_top1']:.2f}% (best epoch)" in lines
    assert f"  test top-1:  {100 * summary['test_top1']:.2f}% on all 12 test images (weights of the best epoch)" in lines
    for name in ("student.safetensors", "summary.json", "config.yaml", "nsd/metrics.jsonl", "curves.png"):
        assert any(ln.strip().endswith(str(run / name)) for ln in lines), (name, out)
    assert f"run directory: {run}" in lines
    png = (doc_run["work"] / run / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_resume_on_the_finished_run_changes_no_file(doc_run):
    step = _step(doc_run, "pand-train configs/imagefolder_quickstart.yaml data.root=/data/my_images --resume")
    before, after = step["hashes"]
    assert before == after and "student.safetensors" in before
    assert "is a finished run" in step["out"] and "no file was changed" in step["out"]
    assert "epoch 1/2" not in step["out"]


def test_files_and_folders_are_readable_by_others(doc_run):
    runs = doc_run["work"] / "runs"
    paths = [p for p in runs.rglob("*")] + [doc_run["work"] / "bundles"]
    assert any(p.name == "manifest.json" for p in paths) and any(p.name == "student.safetensors" for p in paths)
    wrong = [(str(p), oct(stat.S_IMODE(p.stat().st_mode))) for p in paths
             if stat.S_IMODE(p.stat().st_mode) != (0o755 if p.is_dir() else 0o644)]
    assert not wrong, wrong  # umask 022: 0644 files, 0755 folders (mkstemp/mkdtemp alone give 0600/0700)


def test_export_from_a_moved_dataset_and_one_top1_per_split(doc_run):
    work = doc_run["work"]
    assert not doc_run["data"].exists() and doc_run["moved"].is_dir()  # the recorded data.root is gone
    summary = json.loads((work / "runs/quickstart/summary.json").read_text())
    m = json.loads((work / "runs/quickstart/export/onnx-fp32-moved/manifest.json").read_text())
    assert m["valid"] and m["parity"]["split"] == "test" and m["parity"]["n_images"] == 12
    assert m["parity"]["split_images"] == 12
    assert m["parity"]["reference_accuracy"] == pytest.approx(summary["test_top1"])
    bench = json.loads((work / "runs/quickstart/bench-moved/pand-bench.json").read_text())  # --output DIR
    rows = bench["rows"]
    assert rows and all(r["status"] == "ok" for r in rows)
    for r in rows:  # the full test split: the same top-1 as training reported
        assert r["n_eval"] == 12 and r["eval_source"].startswith(f"all 12 images of {doc_run['moved'] / 'test'}")
        assert r["top1"] == pytest.approx(summary["test_top1"])
    assert (work / "runs/quickstart/bench-moved/pand-bench.md").is_file()


def test_bench_rows_of_pytorch_and_bundles_use_the_same_images(doc_run):
    work = doc_run["work"]
    step = _step(doc_run, "pand-bench runs/quickstart/export/onnx-fp32 runs/quickstart/export/onnx-int8-cpu")
    bench = json.loads((work / "runs/quickstart/export/onnx-fp32/bench/pand-bench.json").read_text())  # default
    rows = [r for r in bench["rows"] if r["status"] == "ok"]
    assert {r["backend"] for r in rows} == {"pytorch", "onnxruntime"} and len(rows) == len(bench["rows"])
    assert len({(r["n_eval"], r["eval_source"]) for r in rows}) == 1  # one set of images for every top-1
    assert len({r["agreement_source"] for r in rows}) == 1 and "parity images" in rows[0]["agreement_source"]
    summary = json.loads((work / "runs/quickstart/summary.json").read_text())
    for r in rows:
        if r["precision"] in ("fp32", "fp32-eager"):
            assert r["top1"] == pytest.approx(summary["test_top1"]), r
    assert "top-1 %: on all 12 images of" in step["out"]
    assert "agree % / max abs diff: vs the PyTorch logits stored in the bundle, on all 12 test images" in step["out"]


def test_python_api_predicts_what_the_bundle_predicts(doc_run):
    step = next(s for s in doc_run["steps"] if s["kind"] == "python")
    printed = [ln for ln in step["out"].splitlines() if ln.startswith("[")]
    assert len(printed) == 2 and printed[0] == printed[1], step["out"]


def test_device_copy_runs_with_the_runtime(doc_run):
    bench = doc_run["work"] / "bundles" / "onnx-fp32" / "bench" / "pand-bench.json"
    rows = json.loads(bench.read_text())["rows"]
    assert rows and all(r["status"] == "ok" for r in rows)
