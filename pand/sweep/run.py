"""``pand-sweep``'s work: Stage PSC once, then per student Stage NSD, ``pand-export`` per precision and a measurement
of every bundle (validation/test top-1 with the runtime, ``pand-bench`` latency and throughput, FLOPs from the ONNX
graph), the Pareto front and the recommendation under a latency budget.

Layout of the sweep directory (``--run-dir``, default ``runs/sweep``)::

    psc/                        Stage PSC run (``pand-train --stage psc``), shared by every student
    students/<student>/         one ``pand-train`` run per student (psc.artifact = psc/'s anchors), <student>.log
    students/<student>.anchors.json   sha256 of the anchors that student was trained with
    bundles/<student>-<prec>/   ``pand-export`` bundle; <..>.export.json (how it was made), <..>.measure.json
                                (its numbers, keyed by model sha256, device and bench settings), export.log
    sweep.json, sweep.md, pareto.png

Resuming: every step is skipped when its result is on disk and was made from the same inputs: the PSC run and each
student run when their resolved configuration is the same (:func:`pand.demo.runner.same_config`; a student run
interrupted under the same configuration is resumed from its checkpoint by :func:`pand.demo.runner.train_runs`),
a bundle when its export arguments and source checkpoint sha256 are the same, a measurement when the model file,
device key and bench settings are the same. A second invocation of a finished sweep therefore trains, exports and
measures nothing; it only rewrites the three reports.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from pand.config.schema import RunCfg
from pand.errors import PandError
from pand_runtime.bench_rows import BenchOptions

from .plan import plan_items, resolve_precisions, resolve_students, student_slug

__all__ = ["SweepOptions", "BudgetError", "run_sweep"]

Say = Callable[[str], None]


class BudgetError(PandError):
    """No measured bundle meets ``--budget-ms`` (the sweep's reports are written before this is raised)."""


@dataclass
class SweepOptions:
    """Everything ``pand-sweep`` can be told (``pand-sweep --help`` describes each)."""

    config: str
    overrides: Sequence[str] = ()
    students: str = "resnet18,mobilenet_v3_small"
    precisions: str = "fp32,int8"
    budget_ms: Optional[float] = None
    batch: int = 1  # the latency batch (and the budget's)
    max_batch: int = 32  # export max batch and the throughput batch
    run_dir: Path = Path("runs/sweep")
    threads: int = 0  # ONNX Runtime intra-op threads (bench and accuracy)
    calib_images: int = 256
    parity_images: int = 256
    export_args: Sequence[str] = ()  # passed to every pand-export call
    warmup_ms: float = BenchOptions.warmup_ms  # pand-bench's own timing defaults
    iterations: int = BenchOptions.iterations
    min_time: float = BenchOptions.min_time
    plot_split: str = "val"  # the accuracy on pareto.png: val or test


def _read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, obj: Any) -> None:
    from pand.utils.io import atomic_write_json

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, obj)


def _run_logged(args: List[str], log: Path, env: Optional[Dict[str, str]] = None) -> int:
    """Run ``args`` with stdout and stderr appended to ``log``; returns the exit status."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as f:
        f.write("$ " + " ".join(args) + "\n")
        f.flush()
        return subprocess.run(args, stdout=f, stderr=subprocess.STDOUT, env=env).returncode


def _log_tail(log: Path, n: int = 15) -> str:
    try:
        return "".join(log.read_text(errors="replace").splitlines(keepends=True)[-n:])
    except OSError:
        return ""


# -- Stage PSC, once ------------------------------------------------------------------------------------------------

def uses_psc(cfg: RunCfg) -> bool:
    """Whether ``cfg``'s recipe trains Stage PSC anchors (a teacher, ``recipe.anchors=psc``, PSC enabled, no given
    ``psc.artifact``)."""
    return bool(cfg.recipe.use_teacher) and str(cfg.recipe.anchors) == "psc" and bool(cfg.psc.enabled) \
        and not cfg.psc.artifact


def stage_psc(cfg: RunCfg, psc_dir: Path, say: Say) -> Optional[Path]:
    """The anchors every student is trained with: ``cfg.psc.artifact`` when given, else Stage PSC run once in
    ``psc_dir`` (``pand-train --stage psc`` in a subprocess; skipped when ``psc_dir`` holds the artifact of the same
    resolved configuration). None when the recipe learns no anchors."""
    from pand.config import save_config
    from pand.demo.runner import same_config
    from pand.psc.anchors import ARTIFACT_NAME

    if cfg.psc.artifact:
        return Path(str(cfg.psc.artifact)).expanduser().resolve()
    if not uses_psc(cfg):
        return None
    artifact = psc_dir / "psc" / ARTIFACT_NAME
    if artifact.is_file() and same_config(psc_dir, cfg):
        say(f"Stage PSC: reusing {artifact}")
        return artifact.resolve()
    say(f"Stage PSC (once, shared by every student) -> {psc_dir}")
    psc_dir.mkdir(parents=True, exist_ok=True)
    log = psc_dir.parent / f"{psc_dir.name}.log"
    with tempfile.TemporaryDirectory(prefix=".pand-cfg-", dir=psc_dir.parent) as tmp:
        cfg_file = Path(tmp) / "config.yaml"
        save_config(cfg, cfg_file)
        rc = _run_logged([sys.executable, "-m", "pand.cli", str(cfg_file), "--run-dir", str(psc_dir),
                          "--stage", "psc"], log)
    if rc != 0 or not artifact.is_file():
        raise PandError(f"Stage PSC failed (pand-train exit {rc}); log {log}:\n{_log_tail(log)}")
    return artifact.resolve()


# -- students --------------------------------------------------------------------------------------------------------

def student_config(opts: SweepOptions, student: str, anchors: Optional[Path]) -> RunCfg:
    """The resolved configuration of ``student``'s run: the sweep's config and overrides, ``student.arch``, a name,
    and ``psc.artifact`` = the shared anchors."""
    from pand.config import load_config

    over = [*opts.overrides, f"student.arch={student}", f"name=sweep_{student_slug(student)}"]
    if anchors is not None:
        over.append(f"psc.artifact={anchors}")
    return load_config(opts.config, over)


def _check_anchor_record(run: Path, record: Path, sha: Optional[str], say: Say) -> None:
    """Drop a student run trained with other anchors (same path, other content), then record ``sha`` for it."""
    old = _read_json(record)
    if run.exists() and (old is None or old.get("anchors_sha256") != sha):
        say(f"  {run.name}: the anchors changed since it was trained; training it again")
        shutil.rmtree(run)
    if old != {"anchors_sha256": sha}:
        _write_json(record, {"anchors_sha256": sha})


def count_parameters(student_file: Path) -> int:
    """Parameters of the student classifier in ``student_file`` (``student.safetensors``: arch + num_classes)."""
    from pand.models.students import create_student
    from pand.utils.io import load_tensors

    _, meta = load_tensors(student_file)
    model = create_student(str(meta["arch"]), int(meta["num_classes"]))
    return int(sum(p.numel() for p in model.parameters()))


# -- export ----------------------------------------------------------------------------------------------------------

def export_format() -> str:
    """``trt`` where TensorRT, pycuda and a CUDA GPU are usable here (:func:`pand_runtime.trt_env.probe`), else
    ``onnx`` (ONNX Runtime CPU)."""
    try:
        from pand_runtime.trt_env import probe

        return "onnx" if probe().missing else "trt"
    except Exception:  # noqa: BLE001 - no TensorRT stack at all
        return "onnx"


def export_args(run: Path, bundle: Path, precision: str, fmt: str, opts: SweepOptions) -> List[str]:
    """The ``pand-export`` arguments of one bundle (int8: the CPU flavour for ONNX Runtime, TensorRT's for engines)."""
    args = [str(run), "--format", fmt, "--precision", precision, "--max-batch", str(opts.max_batch),
            "--parity-images", str(opts.parity_images), "--output", str(bundle)]
    if precision == "int8":
        args += ["--target", "tensorrt" if fmt == "trt" else "cpu", "--calib-images", str(opts.calib_images)]
    return [*args, *opts.export_args]


def export_bundle(run: Path, bundle: Path, precision: str, fmt: str, opts: SweepOptions, say: Say) -> Dict[str, Any]:
    """Export (or reuse) one bundle. Returns ``{"status": ok|error, "valid", "reason", "reused"}``."""
    from pand.utils.io import sha256_file

    args = export_args(run, bundle, precision, fmt, opts)
    record = bundle.parent / f"{bundle.name}.export.json"
    student_sha = sha256_file(run / "student.safetensors")
    manifest = _read_json(bundle / "manifest.json")
    old = _read_json(record)
    if manifest and old and old.get("args") == args and old.get("student_sha256") == student_sha \
            and (manifest.get("source") or {}).get("sha256") == student_sha:
        return {"status": "ok", "valid": manifest.get("valid"), "reason": "", "reused": True}
    log = bundle.parent / "export.log"
    say(f"  pand-export {' '.join(args[1:])}")
    rc = _run_logged([sys.executable, "-m", "pand_export.cli", *args], log)
    manifest = _read_json(bundle / "manifest.json")
    if rc not in (0, 1) or not manifest:
        return {"status": "error", "valid": None, "reused": False,
                "reason": f"pand-export exit {rc}; see {log}: {_log_tail(log, 3).strip()}"}
    _write_json(record, {"args": args, "student_sha256": student_sha})
    reason = "" if rc == 0 else "export parity gate failed (valid: false)"
    return {"status": "ok", "valid": manifest.get("valid"), "reason": reason, "reused": False}


# -- measurement -----------------------------------------------------------------------------------------------------

def bundle_top1(predictor, samples: Sequence[Sequence[Any]], chunk: int = 64) -> Optional[float]:
    """Top-1 accuracy of ``predictor`` on ``(image path, label)`` ``samples`` (the bundle's own preprocessing);
    None for no samples."""
    import numpy as np

    if not samples:
        return None
    correct = 0
    for i in range(0, len(samples), chunk):
        part = samples[i:i + chunk]
        logits = predictor.predict_logits([str(p) for p, _ in part])
        correct += int((np.argmax(logits, axis=1) == np.asarray([int(y) for _, y in part])).sum())
    return correct / len(samples)


def measure_bundle(bundle: Path, splits, opts: SweepOptions, samples_key: str, say: Say) -> Dict[str, Any]:
    """Validation and test top-1 (runtime, whole splits), ``pand-bench`` p50/p99 at ``opts.batch`` and throughput at
    ``opts.max_batch`` (:func:`pand_runtime.bench.run_bench`), MACs/FLOPs from the ONNX graph. Reused from
    ``<bundle>.measure.json`` when the model file, device key, bench settings and splits are the same."""
    from pand_runtime.bench import run_bench
    from pand_runtime.bench_rows import BenchOptions
    from pand_runtime.device import device_key
    from pand_runtime.model_kinds import kind_of_backend
    from pand_runtime.predictor import Predictor

    from .flops import onnx_macs

    record = bundle.parent / f"{bundle.name}.measure.json"
    batches = tuple(sorted({int(opts.batch), int(opts.max_batch)}))
    bopts = BenchOptions(batches=batches, threads=opts.threads, warmup_ms=opts.warmup_ms,
                         iterations=opts.iterations, min_time=opts.min_time)
    predictor = Predictor.from_bundle(bundle, threads=opts.threads, allow_invalid=True)
    try:
        mf = predictor.manifest.model(kind_of_backend(predictor.backend_name).format)
        key = {"model_sha256": mf.sha256 if mf is not None else None,
               "device_key": device_key(predictor.backend.describe()),
               "bench": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(bopts).items()
                         if k in ("batches", "threads", "warmup_ms", "iterations", "min_time")},
               "samples": samples_key}
        old = _read_json(record)
        if old and old.get("key") == key:
            return {**old["result"], "reused": True}
        say(f"  measuring {bundle.name}: accuracy (val, test), pand-bench at batch {', '.join(map(str, batches))}")
        val = bundle_top1(predictor, splits.val.samples if splits.val is not None else [])
        test = bundle_top1(predictor, splits.test.samples if splits.test is not None else [])
    finally:
        predictor.close()
    rows = run_bench([bundle], bopts)
    lat = next((r for r in rows if r.batch == opts.batch), None)
    thr = next((r for r in rows if r.batch == opts.max_batch), None)
    onnx_file = bundle / (mf.file if mf is not None and mf.format == "onnx" else "model.onnx")
    try:
        macs: Optional[int] = onnx_macs(onnx_file)
        macs_error = ""
    except Exception as e:  # noqa: BLE001 - the row keeps its other numbers
        macs, macs_error = None, f"{type(e).__name__}: {e}"
    failed = [r for r in rows if r.status != "ok"]
    result = {
        "val_top1": val, "test_top1": test, "macs": macs, "flops": 2 * macs if macs is not None else None,
        "macs_error": macs_error,
        "latency_batch": int(opts.batch), "p50_ms": lat.p50_ms if lat else None, "p99_ms": lat.p99_ms if lat else None,
        "cv": lat.cv if lat else None, "throughput_batch": int(opts.max_batch),
        "throughput": thr.throughput if thr else None, "backend": rows[0].backend if rows else None,
        "device_key": (rows[0].details.get("device_key") if rows else None) or key["device_key"],
        "bench_status": "ok" if not failed else "error",
        "bench_reason": "; ".join(f"batch {r.batch}: {r.reason}" for r in failed),
    }
    if not failed:  # a failed benchmark is measured again next time
        _write_json(record, {"key": key, "result": result})
    return {**result, "reused": False}


def _samples_key(splits) -> str:
    from pand.utils.io import sha256_bytes

    blob = json.dumps({s: (getattr(splits, s).samples if getattr(splits, s) is not None else None)
                       for s in ("val", "test")}, sort_keys=True)
    return sha256_bytes(blob.encode("utf-8"))


# -- the sweep -------------------------------------------------------------------------------------------------------

def run_sweep(opts: SweepOptions, say: Say = print) -> Dict[str, Any]:
    """Run (or resume) the sweep and write ``sweep.json``, ``sweep.md`` and ``pareto.png`` into ``opts.run_dir``.

    Returns:
        The ``sweep.json`` payload.

    Raises:
        ConfigError: bad ``--students`` / ``--precisions`` / batch sizes (before anything runs).
        PandError: Stage PSC or a student's training failed (the message has the log's tail).
        BudgetError: with ``budget_ms``, no bundle meets it (the reports are written first; the message names the
            fastest bundle).
    """
    from pand.config import ConfigError, load_config
    from pand.data import build_splits
    from pand.demo.runner import train_runs
    from pand.utils.io import sha256_file
    from pand.utils.lock import exclusive_lock

    from .pareto import front_points, pareto_front, recommend
    from .report import write_reports

    t0 = time.time()
    base = load_config(opts.config, list(opts.overrides))
    image_size = int(base.student.image_size)
    students = resolve_students(opts.students, image_size, say)
    precisions = resolve_precisions(opts.precisions)
    if opts.batch < 1 or opts.max_batch < opts.batch:
        raise ConfigError(f"--batch {opts.batch} / --max-batch {opts.max_batch}: need 1 <= --batch <= --max-batch")
    if opts.budget_ms is not None and opts.budget_ms <= 0:
        raise ConfigError(f"--budget-ms {opts.budget_ms}: a latency budget must be > 0 ms")
    root = Path(opts.run_dir)
    root.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(root / ".pand-sweep.lock", f"sweep directory {root}",
                        "wait for that sweep to finish or choose another --run-dir"):
        fmt = export_format()
        say(f"pand-sweep: {len(students)} student(s) x {len(precisions)} precision(s) at {image_size} px, "
            f"bundles for {'TensorRT' if fmt == 'trt' else 'ONNX Runtime'}, into {root}")
        anchors = stage_psc(load_config(opts.config, [*opts.overrides, "name=sweep_psc"]), root / "psc", say)
        anchors_sha = sha256_file(anchors) if anchors is not None else None
        if anchors is not None:
            say(f"anchors: {anchors} (sha256 {anchors_sha[:16]}...)")

        runs: Dict[str, Dict[str, Any]] = {}
        for k, s in enumerate(students, 1):
            run = root / "students" / student_slug(s)
            say(f"[{k}/{len(students)}] Stage NSD: {s} -> {run}")
            cfg = student_config(opts, s, anchors)
            _check_anchor_record(run, run.parent / f"{run.name}.anchors.json", anchors_sha, say)
            summary = train_runs([(cfg, run)], jobs=1, say=say)[0]
            runs[s] = {"run_dir": str(run), "summary": summary,
                       "parameters": count_parameters(run / "student.safetensors")}

        splits = build_splits(base.data, cache_dir=base.cache_dir)
        skey = _samples_key(splits)
        entries: List[Dict[str, Any]] = []
        items = plan_items(students, precisions)
        for k, (s, p) in enumerate(items, 1):
            run = Path(runs[s]["run_dir"])
            bundle = root / "bundles" / f"{student_slug(s)}-{p}"
            say(f"[{k}/{len(items)}] {s} {p}: export + bench -> {bundle}")
            ex = export_bundle(run, bundle, p, fmt, opts, say)
            summary = runs[s]["summary"]
            entry: Dict[str, Any] = {
                "student": s, "precision": p, "run_dir": str(run), "bundle": str(bundle), "format": fmt,
                "status": ex["status"], "valid": ex["valid"], "reason": ex["reason"],
                "parameters": runs[s]["parameters"], "anchors_sha256": anchors_sha,
                "pytorch_val_top1": summary.get("val_top1"), "pytorch_test_top1": summary.get("test_top1"),
            }
            if ex["status"] == "ok":
                try:
                    m = measure_bundle(bundle, splits, opts, skey, say)
                except Exception as e:  # noqa: BLE001 - one broken bundle is a row of the table, not a crash
                    m = {"bench_status": "error", "bench_reason": f"measurement failed: {type(e).__name__}: {e}"}
                entry.update({k2: v for k2, v in m.items() if k2 not in ("bench_status", "bench_reason", "reused")})
                if m.get("bench_status") != "ok":
                    entry["status"] = "error"
                    entry["reason"] = "; ".join(x for x in (entry["reason"], m.get("bench_reason", "")) if x)
                say(f"  {s} {p}: val top-1 {_pct(entry.get('val_top1'))}  test top-1 {_pct(entry.get('test_top1'))}  "
                    f"p50 {_ms(entry.get('p50_ms'))} ms at batch {opts.batch}"
                    + ("  (reused)" if ex["reused"] and m.get("reused") else ""))
            else:
                say(f"  {s} {p}: FAILED: {entry['reason']}")
            entries.append(entry)

        front = pareto_front(front_points(entries))
        for e, f in zip(entries, front):
            e["pareto"] = bool(f)
        keys = sorted({e["device_key"] for e in entries if e.get("device_key")})
        payload: Dict[str, Any] = {
            "config": str(opts.config), "overrides": list(opts.overrides), "students": students,
            "precisions": precisions, "image_size": image_size, "format": fmt,
            "latency_batch": int(opts.batch), "throughput_batch": int(opts.max_batch),
            "device_key": keys[0] if len(keys) == 1 else keys,
            "anchors": {"path": str(anchors) if anchors else None, "sha256": anchors_sha},
            "budget_ms": opts.budget_ms, "recommendation": None, "entries": entries,
        }
        rec = None
        if opts.budget_ms is not None:
            rec = recommend(entries, opts.budget_ms)
            payload["recommendation"] = {
                "budget_ms": rec.budget_ms, "met": rec.met, "chosen_on": "val_top1",
                "chosen": entries[rec.chosen] if rec.chosen is not None else None,
                "fastest": entries[rec.fastest] if rec.fastest is not None else None,
            }
        payload["wall_s"] = round(time.time() - t0, 1)
        write_reports(root, payload, plot_split=opts.plot_split)
        say(f"wrote {root / 'sweep.json'}, {root / 'sweep.md'}, {root / 'pareto.png'} ({payload['wall_s']:.0f} s)")
        if rec is not None:
            if rec.met:
                c = entries[rec.chosen]
                say(f"recommended under {opts.budget_ms:g} ms at batch {opts.batch}: {c['student']} {c['precision']} "
                    f"-- val top-1 {_pct(c['val_top1'])} (chosen on validation), test top-1 {_pct(c['test_top1'])}, "
                    f"p50 {_ms(c['p50_ms'])} ms: {c['bundle']}")
            else:
                raise BudgetError(budget_sentence(payload))
        return payload


def budget_sentence(payload: Dict[str, Any]) -> str:
    """The sentence for a budget that no bundle meets (names the fastest bundle)."""
    rec = payload["recommendation"]
    f = rec.get("fastest")
    fastest = (f"the fastest is {f['student']} {f['precision']} at {_ms(f['p50_ms'])} ms p50 ({f['bundle']})" if f
               else "no bundle could be measured")
    return (f"no bundle meets the budget of {rec['budget_ms']:g} ms at batch {payload['latency_batch']}: {fastest}. "
            f"Raise --budget-ms, or add smaller students or int8 to --students / --precisions")


def _pct(v: Optional[float]) -> str:
    return "n/a" if v is None else f"{100 * float(v):.1f}"


def _ms(v: Optional[float]) -> str:
    return "n/a" if v is None else f"{float(v):.2f}"
