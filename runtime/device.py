"""What decides a latency: the identity of this machine's CPU or GPU, as a dictionary and as a file-name-safe key.

Two machines sold under one marketing name ("AMD EPYC", 2 vCPUs) can be CPU generations apart: a Zen 3 without
AVX-512 runs an fp32 ResNet-18 about three times slower than a Zen 5 with AVX-512, and an int8 model gains most
where the CPU has int8 dot-product instructions (VNNI, AMX). A latency number is therefore only comparable with one
measured on the same *identity*:

* CPU (ONNX Runtime CPU provider): vendor, family/model numbers, the exact model string of ``/proc/cpuinfo``, the
  instruction-set features that change ONNX Runtime's kernels (:data:`SPEED_FEATURES`), the number of logical CPUs
  this process may use, the intra-op thread count and the ONNX Runtime version.
* TensorRT: GPU name, compute capability, TensorRT version and, where readable, the power mode (Jetson nvpmodel).

:func:`device_key` turns an identity into one key string; a baseline recorded under a different key is never used
for a comparison. Pure standard library: no torch, no onnxruntime import unless the version is asked for.
"""
from __future__ import annotations

import os
import platform
import re
from pathlib import Path
from typing import Any, Dict, FrozenSet, Mapping, Optional

__all__ = ["SPEED_FEATURES", "cpu_info", "cpu_features", "cpu_model",
           "device_identity", "device_key", "identity_diff", "gpu_power_mode", "clock_info"]

#: x86 / Arm features that select different ONNX Runtime CPU kernels (fp32 GEMM width, int8 dot products).
SPEED_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8", "asimddp", "i8mm")

_CPUINFO = Path("/proc/cpuinfo")
_NVPMODEL_STATUS = Path("/var/lib/nvpmodel/status")


def _first_block(text: str) -> Dict[str, str]:
    """``key: value`` pairs of the first processor block of a ``/proc/cpuinfo`` text (keys lower-cased)."""
    out: Dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if out:
                break
            continue
        if ":" in line:
            k, v = line.split(":", 1)
            out.setdefault(k.strip().lower(), v.strip())
    return out


def cpu_info(cpuinfo_text: Optional[str] = None) -> Dict[str, Any]:
    """Vendor, family, model, model name and the full feature-flag set of this CPU.

    ``cpuinfo_text`` is the content of ``/proc/cpuinfo`` (read from the file when ``None``); on systems without it
    the fields fall back to :mod:`platform` and the feature set is empty.
    """
    if cpuinfo_text is None:
        try:
            cpuinfo_text = _CPUINFO.read_text()
        except OSError:
            cpuinfo_text = ""
    b = _first_block(cpuinfo_text)
    flags = b.get("flags") or b.get("features") or ""  # x86 "flags", Arm "Features"
    return {
        "vendor": b.get("vendor_id") or b.get("cpu implementer") or platform.machine() or "unknown",
        "family": b.get("cpu family") or b.get("cpu architecture") or "?",
        "model": b.get("model") or b.get("cpu part") or "?",
        "model_name": b.get("model name") or platform.processor() or platform.machine() or "unknown-cpu",
        "features": frozenset(flags.split()),
    }


def cpu_features(cpuinfo_text: Optional[str] = None) -> FrozenSet[str]:
    """The CPU's feature flags (``/proc/cpuinfo`` ``flags``), empty where unreadable."""
    return cpu_info(cpuinfo_text)["features"]


def cpu_model() -> str:
    """The CPU model string (``/proc/cpuinfo`` ``model name``, else :func:`platform.processor`)."""
    return str(cpu_info()["model_name"])


def _logical_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def gpu_power_mode() -> Optional[str]:
    """The Jetson power mode (``/var/lib/nvpmodel/status``, e.g. ``pmode:0000``), ``None`` where not readable."""
    try:
        text = _NVPMODEL_STATUS.read_text().strip()
    except OSError:
        return None
    return text or None


def _read(path: Path) -> Optional[str]:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def clock_info(nvidia_smi: bool = True) -> Dict[str, str]:
    """Clock and power settings that change latencies, where readable (empty entries are left out): the CPU frequency
    governor and current frequency (cpufreq), the Jetson power mode (nvpmodel) and GPU frequency (devfreq), and on a
    discrete GPU the SM clock, its maximum and the power limit from ``nvidia-smi``. Nothing here needs privileges."""
    out: Dict[str, str] = {}
    cpufreq = Path("/sys/devices/system/cpu/cpu0/cpufreq")
    gov = _read(cpufreq / "scaling_governor")
    if gov:
        out["cpu_governor"] = gov
    cur = _read(cpufreq / "scaling_cur_freq")
    if cur and cur.isdigit():
        out["cpu_mhz"] = str(int(cur) // 1000)
    mode = gpu_power_mode()
    if mode:
        out["power_mode"] = mode
    for dev in sorted(Path("/sys/class/devfreq").glob("*")) if Path("/sys/class/devfreq").is_dir() else []:
        name = (_read(dev / "device" / "of_node" / "name") or dev.name).lower()
        if "gpu" in name or "gv11b" in name or "ga10b" in name:
            freq = _read(dev / "cur_freq")
            if freq and freq.isdigit():
                out["gpu_mhz"] = str(int(freq) // 1_000_000)
            break
    if nvidia_smi:
        import shutil
        import subprocess

        exe = shutil.which("nvidia-smi")
        if exe:
            try:
                r = subprocess.run([exe, "--query-gpu=clocks.sm,clocks.max.sm,power.limit", "--format=csv,noheader"],
                                   capture_output=True, text=True, timeout=5, check=False)
                line = r.stdout.strip().splitlines()[0] if r.returncode == 0 and r.stdout.strip() else ""
                if line:
                    sm, sm_max, power = (v.strip() for v in (line.split(",") + ["", "", ""])[:3])
                    out.update({k: v for k, v in (("gpu_sm_clock", sm), ("gpu_sm_clock_max", sm_max),
                                                  ("gpu_power_limit", power)) if v})
            except (OSError, subprocess.SubprocessError):
                pass
    return out


def _ort_version() -> str:
    try:
        import onnxruntime  # noqa: PLC0415 - only when a CPU identity is asked for

        return str(onnxruntime.__version__)
    except ImportError:
        return "none"


def device_identity(describe: Mapping[str, Any], cpuinfo_text: Optional[str] = None) -> Dict[str, Any]:
    """The fields that decide the speed of a backend described by ``describe`` (a backend's ``describe()``).

    TensorRT: ``{kind: gpu, gpu, compute_capability, tensorrt, power_mode}``. ONNX Runtime:
    ``{kind: cpu|ort-<provider>, vendor, family, model, model_name, isa, cpus, threads, onnxruntime}`` where ``isa``
    is the sorted list of :data:`SPEED_FEATURES` the CPU has.
    """
    if describe.get("backend") == "tensorrt":
        cc = describe.get("compute_capability")
        return {"kind": "gpu", "gpu": str(describe.get("gpu_name", "?")),
                "compute_capability": ".".join(map(str, cc)) if isinstance(cc, (list, tuple)) else str(cc or "?"),
                "tensorrt": str(describe.get("trt_version", "?")),
                "power_mode": describe.get("power_mode") or gpu_power_mode() or "-"}
    info = cpu_info(cpuinfo_text)
    providers = list(describe.get("providers") or ["CPUExecutionProvider"])
    kind = "cpu" if providers[0] == "CPUExecutionProvider" else \
        "ort-" + providers[0].replace("ExecutionProvider", "").lower()
    cpus = _logical_cpus()
    return {"kind": kind, "vendor": info["vendor"], "family": str(info["family"]), "model": str(info["model"]),
            "model_name": info["model_name"], "isa": sorted(f for f in SPEED_FEATURES if f in info["features"]),
            "cpus": cpus, "threads": int(describe.get("intra_op_threads") or 0) or cpus,
            "onnxruntime": str(describe.get("onnxruntime_version") or _ort_version())}


def _slug(s: Any) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", str(s)).strip("-").lower() or "x"


def device_key(identity_or_describe: Mapping[str, Any], cpuinfo_text: Optional[str] = None) -> str:
    """One file-name-safe key of an identity (or of a backend ``describe()``, turned into one first).

    CPU: ``cpu-<vendor>-f<family>m<model>-<model name>-<isa+...>-n<cpus>-t<threads>-ort<version>``;
    TensorRT: ``gpu-<name>-sm<cc>-trt<version>[-pm<power mode>]``.
    """
    ident = identity_or_describe if "kind" in identity_or_describe else \
        device_identity(identity_or_describe, cpuinfo_text)
    if ident["kind"] == "gpu":
        key = f"gpu-{_slug(ident['gpu'])}-sm{_slug(ident['compute_capability'])}-trt{_slug(ident['tensorrt'])}"
        return key + (f"-pm{_slug(ident['power_mode'])}" if ident.get("power_mode") not in (None, "-") else "")
    isa = "+".join(ident["isa"]) or "baseline"
    return (f"{ident['kind']}-{_slug(ident['vendor'])}-f{_slug(ident['family'])}m{_slug(ident['model'])}-"
            f"{_slug(ident['model_name'])}-{isa.replace('_', '')}-n{ident['cpus']}-t{ident['threads']}-"
            f"ort{_slug(ident['onnxruntime'])}")


def identity_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> Dict[str, tuple]:
    """Fields on which two identities differ: ``{field: (a value, b value)}``."""
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}
