"""The TensorRT device checks of ``bench/gpu_check.py`` (stage ``trt``): what the fakes in tests/fakes/ cannot settle,
measured once on the first GPU with TensorRT and pycuda.

===================  ==========================================================================================
``negative-control`` a Q/DQ model whose bias is dequantised from INT32 must fail to parse (proves the parser check
                     that pand's ``--target tensorrt`` int8 flavour avoids is real)
``fp32-parity``      pand-engine on an fp32 bundle: TF32 off -> max |diff| <= 1e-3 against PyTorch; TF32 on -> recorded
``batches``          batches 1, 3, 8, 11 through ``Predictor`` (TensorRT) equal ONNX Runtime's logits (<= 1e-3)
``garbage-cache``    a garbage timing cache is refused with a PandError naming the file (which branch TensorRT took:
                     ``create_timing_cache`` returning None or raising, is recorded)
``tampered-engine``  a damaged plan (manifest hash updated): ``auto`` falls back with one warning, ``tensorrt`` raises
                     a PandError
``threads``          8 threads x 20 calls equal the serial results, then ``close()`` from another thread frees the
                     device memory (``mem_get_info``)
``cycles``           50 create / run / close cycles: ``mem_get_info`` back to its baseline (within 32 MiB)
===================  ==========================================================================================

On a machine without TensorRT, pycuda or a GPU every check is recorded as skipped with what is missing
(:func:`pand_runtime.trt_env.probe`). ``--dry-run`` lists the checks and prepares what the CPU can (the negative-control
model, the garbage cache); it runs nothing that needs a GPU.
"""
from __future__ import annotations

import json
import shutil
import sys
import threading
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MEM_SLACK = 32 << 20


def int32_bias_qdq_model(path: Path) -> Path:
    """A one-Conv Q/DQ ONNX model whose bias comes from ``DequantizeLinear`` of an INT32 tensor (ONNX-valid; TensorRT's
    parser rejects INT32 DequantizeLinear inputs)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.integers(-127, 127, (4, 3, 3, 3), dtype=np.int8), "w_q"),
             numpy_helper.from_array(np.array(0.01, np.float32), "w_scale"),
             numpy_helper.from_array(np.array(0, np.int8), "w_zp"),
             numpy_helper.from_array(rng.integers(-1000, 1000, (4,), dtype=np.int32), "b_q"),
             numpy_helper.from_array(np.array(1e-4, np.float32), "b_scale")]
    nodes = [helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w"]),
             helper.make_node("DequantizeLinear", ["b_q", "b_scale"], ["b"]),
             helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "int32_bias", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                  [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def garbage_cache(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not a TensorRT timing cache\x00" * 8)
    return path


class Work:
    """The shared inputs, made on first use: a tiny run, its fp32 ONNX bundle and the engine bundle built from it."""

    def __init__(self, root: Path):
        self.root = root
        self._bundle: Optional[Path] = None
        self._engine: Optional[Path] = None

    @property
    def bundle(self) -> Path:
        if self._bundle is None:
            sys.path.insert(0, str(REPO / "tests" / "export"))
            import bundle_factory as bf

            run = bf.make_run_dir(self.root / "run", self.root / "cache")
            self._bundle = bf.export(run, self.root / "fp32", precision="fp32", parity_images=32, max_batch=8,
                                     batch=4).bundle
        return self._bundle

    @property
    def engine(self) -> Path:
        if self._engine is None:
            from pand_runtime.engine import build_engine_bundle

            self._engine = build_engine_bundle(self.bundle, self.root / "fp32-trt").bundle
        return self._engine


def check_negative_control(w: Work) -> Dict[str, Any]:
    import tensorrt as trt

    path = int32_bias_qdq_model(w.root / "int32_bias.onnx")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)  # kept alive while its network is used
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    parsed = bool(parser.parse_from_file(str(path)))
    errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
    return {"passed": not parsed, "parsed": parsed, "parser_errors": errors[:5]}


def check_fp32_parity(w: Work) -> Dict[str, Any]:
    from pand_runtime import load_bundle
    from pand_runtime.engine import build_engine_bundle

    off = load_bundle(w.engine).parity["tensorrt"]
    on = build_engine_bundle(w.bundle, w.root / "fp32-tf32", tf32=True).manifest.parity["tensorrt"]
    return {"passed": bool(off["passed"]) and off["max_abs"] <= 1e-3, "tf32_off_max_abs": off["max_abs"],
            "tf32_on_max_abs": on["max_abs"], "tf32_on_passed": on["passed"]}


def check_batches(w: Work) -> Dict[str, Any]:
    from pand_runtime import Predictor
    from pand_runtime.preprocess import normalize_u8

    with Predictor.from_bundle(w.engine, backend="tensorrt") as trt_p, \
            Predictor.from_bundle(w.engine, backend="onnxruntime") as ort_p:
        ref = trt_p.reference()
        diffs = {}
        for n in (1, 3, 8, 11):
            x = normalize_u8(ref["images_u8"][np.arange(n) % len(ref["images_u8"])], trt_p.spec)
            diffs[n] = float(np.abs(trt_p.run(x) - ort_p.run(x)).max())
    return {"passed": all(d <= 1e-3 for d in diffs.values()), "max_abs_by_batch": diffs}


def check_garbage_cache(w: Work) -> Dict[str, Any]:
    from pand_runtime import load_bundle
    from pand_runtime.errors import PandError
    from pand_runtime.engine import build_engine_bundle

    cache = garbage_cache(w.root / "garbage.cache")
    try:
        build_engine_bundle(w.bundle, w.root / "garbage-out", timing_cache=cache)
    except PandError as e:
        msg = str(e)
        return {"passed": str(cache) in msg, "message": msg[:400],
                "branch": "returned None" if "returned None" in msg else "raised"}
    return {"passed": False, "message": "built despite a garbage timing cache", "valid": load_bundle(
        w.root / "garbage-out", allow_invalid=True).valid}


def check_tampered_engine(w: Work) -> Dict[str, Any]:
    from pand_runtime import EngineFallbackWarning, Predictor
    from pand_runtime.errors import PandError
    from pand_runtime.io import sha256_file

    bad = w.root / "tampered"
    shutil.rmtree(bad, ignore_errors=True)
    shutil.copytree(w.engine, bad)
    plan = bytearray((bad / "model.engine").read_bytes())
    mid = len(plan) // 2
    plan[mid:mid + 64] = bytes(64)
    (bad / "model.engine").write_bytes(bytes(plan))
    d = json.loads((bad / "manifest.json").read_text())
    for mf in d["models"]:
        if mf["format"] == "tensorrt":
            mf["sha256"] = sha256_file(bad / "model.engine")
    (bad / "manifest.json").write_text(json.dumps(d))
    res: Dict[str, Any] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            p = Predictor.from_bundle(bad, backend="auto")
            res["auto_backend"] = p.backend_name
            p.close()
        except Exception as e:  # noqa: BLE001
            res["auto_error"] = f"{type(e).__name__}: {e}"[:300]
    fallbacks = [str(x.message)[:300] for x in caught if issubclass(x.category, EngineFallbackWarning)]
    res["auto_warnings"] = fallbacks
    try:
        Predictor.from_bundle(bad, backend="tensorrt").close()
        res["tensorrt"] = "loaded (the damage was not detected)"
    except PandError as e:
        res["tensorrt"] = f"PandError: {e}"[:300]
    except Exception as e:  # noqa: BLE001
        res["tensorrt"] = f"{type(e).__name__} (not a PandError): {e}"[:300]
    # a damaged plan that TensorRT still loads is recorded, not failed: what matters is no traceback type
    res["passed"] = ("auto_error" not in res and res.get("tensorrt", "").startswith(("PandError", "loaded"))
                     and (res.get("auto_backend") == "tensorrt" or len(fallbacks) == 1))
    return res


def _free_bytes(rc: Any, cuda: Any) -> int:
    rc.push()
    try:
        return int(cuda.mem_get_info()[0])
    finally:
        rc.pop()


def check_threads(w: Work) -> Dict[str, Any]:
    import pycuda.driver as cuda

    from pand_runtime import Predictor
    from pand_runtime.backends.cuda_context import RetainedContext

    cuda.init()
    rc = RetainedContext(cuda, 0)
    try:
        free0 = _free_bytes(rc, cuda)
        p = Predictor.from_bundle(w.engine, backend="tensorrt")
        rng = np.random.default_rng(0)
        xs = [rng.normal(size=(1 + k % 4, 3, 64, 64)).astype(np.float32) for k in range(8)]
        serial = [p.run(x) for x in xs]
        outs: Dict[int, List[np.ndarray]] = {k: [] for k in range(8)}
        errors: List[str] = []

        def worker(k: int) -> None:
            try:
                for _ in range(20):
                    outs[k].append(p.run(xs[k]))
            except Exception as e:  # noqa: BLE001
                errors.append(f"{type(e).__name__}: {e}")

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        worst = max(float(np.abs(o - serial[k]).max()) for k in outs for o in outs[k]) if not errors else None
        closer = threading.Thread(target=p.close)
        closer.start()
        closer.join()
        free1 = _free_bytes(rc, cuda)
    finally:
        rc.release()
    return {"passed": not errors and worst is not None and worst <= 1e-5 and abs(free1 - free0) <= MEM_SLACK,
            "errors": errors[:3], "max_abs_vs_serial": worst, "free_before_mb": free0 / 2 ** 20,
            "free_after_close_mb": free1 / 2 ** 20}


def check_cycles(w: Work, n: int = 50) -> Dict[str, Any]:
    import pycuda.driver as cuda

    from pand_runtime.backends.trt_backend import TrtBackend
    from pand_runtime import load_bundle
    from pand_runtime.backends.cuda_context import RetainedContext

    cuda.init()
    info = load_bundle(w.engine).model("tensorrt").info
    x = np.zeros((1, 3, 64, 64), np.float32)
    rc = RetainedContext(cuda, 0)
    try:
        free0 = _free_bytes(rc, cuda)
        t0 = time.perf_counter()
        for _ in range(n):
            be = TrtBackend(w.engine / "model.engine", expected=info)
            be.run(x)
            be.close()
        free1 = _free_bytes(rc, cuda)
    finally:
        rc.release()
    return {"passed": abs(free1 - free0) <= MEM_SLACK, "cycles": n, "free_before_mb": free0 / 2 ** 20,
            "free_after_mb": free1 / 2 ** 20, "seconds": time.perf_counter() - t0}


#: (name, what it settles, the check) in run order.
CHECKS: List[tuple] = [
    ("negative-control", "a Q/DQ model with an INT32 bias must fail to parse", check_negative_control),
    ("fp32-parity", "pand-engine fp32: TF32 off max |diff| <= 1e-3; TF32 on recorded", check_fp32_parity),
    ("batches", "batches 1/3/8/11 through Predictor equal ONNX Runtime (<= 1e-3)", check_batches),
    ("garbage-cache", "a garbage timing cache: PandError naming the file (branch recorded)", check_garbage_cache),
    ("tampered-engine", "a damaged plan: auto falls back with one warning, tensorrt raises PandError",
     check_tampered_engine),
    ("threads", "8 threads x 20 calls equal serial; close() from another thread frees the memory", check_threads),
    ("cycles", "50 create/run/close cycles: mem_get_info back to baseline (32 MiB)", check_cycles),
]


def run_checks(work: Path, dry_run: bool, time_left: Callable[[], float],
               save: Callable[[Dict[str, Any]], None] = lambda res: None) -> Dict[str, Any]:
    """Every check as a row ``{check, what, status, ...}``; never raises."""
    from pand_runtime.trt_env import probe

    rows: List[Dict[str, Any]] = [{"check": name, "what": what} for name, what, _ in CHECKS]
    res: Dict[str, Any] = {"rows": rows}
    env = probe()
    res["env"] = env.lines()
    if dry_run:
        prepared = {"negative-control": lambda: int32_bias_qdq_model(work / "int32_bias.onnx"),
                    "garbage-cache": lambda: garbage_cache(work / "garbage.cache")}
        for row in rows:
            row["status"] = "listed (dry run: needs TensorRT + a CUDA GPU)"
            if row["check"] in prepared:
                try:
                    row["prepared"] = str(prepared[row["check"]]())
                except Exception as e:  # noqa: BLE001
                    row["status"] = "error"
                    row["error"] = f"{type(e).__name__}: {e}"[:300]
        save(res)
        return res
    if not env.ok:
        for row in rows:
            row["status"] = "skipped: " + "; ".join(m.what for m in env.missing)
        save(res)
        return res
    w = Work(work)
    for row, (_, _, fn) in zip(rows, CHECKS):
        if time_left() <= 0:
            row["status"] = "skipped (budget)"
            continue
        t0 = time.perf_counter()
        try:
            row.update(fn(w))
            row["status"] = "ok" if row.get("passed") else "FAILED"
        except Exception as e:  # noqa: BLE001 - the row records it, the next check runs
            row["status"] = "error"
            row["error"] = f"{type(e).__name__}: {e}"[:500]
            traceback.print_exc()
        row["seconds"] = time.perf_counter() - t0
        print(f"trt {row['check']}: {row['status']} {row.get('error', '')}".rstrip(), flush=True)
        save(res)
    return res


def to_markdown(res: Dict[str, Any]) -> List[str]:
    lines = ["## TensorRT device checks", ""] + [f"    {ln}" for ln in res.get("env", [])] + [
        "", "| check | what | status | details |", "|---|---|---|---|"]
    for r in res["rows"]:
        details = {k: v for k, v in r.items() if k not in ("check", "what", "status", "passed")}
        lines.append(f"| {r['check']} | {r['what'].replace('|', '/')} | {r.get('status')} | "
                     f"{json.dumps(details, default=str)[:300].replace('|', '/')} |")
    return lines + [""]
