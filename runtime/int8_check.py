"""Which int8 kernels ONNX Runtime's CPU provider runs here, and a warning when an int8 bundle was validated on
different ones.

An int8 bundle's agreement with PyTorch is measured at export, on the export machine. ONNX Runtime (MLAS) picks its
u8s8/s8s8 GEMM kernels by CPU feature, and they are not all exact:

==============  =======================================================================  =====================
path            instruction                                                              int32 sums
==============  =======================================================================  =====================
``amx``         AMX tiles (``amx_int8``, Intel Sapphire Rapids and later)                exact
``avx512_vnni`` ``vpdpbusd`` (AVX-512 VNNI: Cascade Lake+, AMD Zen 4+)                   exact
``avx_vnni``    ``vpdpbusd`` on 256-bit registers (AVX-VNNI: Alder Lake+, Zen 5)        exact
``avx512bw``    ``vpmaddubsw`` + ``vpmaddwd`` (AVX-512 without VNNI: Skylake-SP)        pairs saturate int16
``avx2``        ``vpmaddubsw`` + ``vpmaddwd`` (AMD Zen 2/3, Intel Haswell..Comet Lake)   pairs saturate int16
``arm_i8mm``    ``smmla``/``ummla`` (Armv8.6 i8mm)                                       exact
``arm_dotprod`` ``sdot``/``udot`` (Armv8.2 dot product)                                  exact
``generic``     anything else                                                            -
==============  =======================================================================  =====================

On the saturating paths a u8 x s8 product pair can exceed int16 (255 x 127 x 2 > 32767) unless the weights were
quantized to 7 bits (``reduce_range``, microsoft/onnxruntime#12088). ``pand-export`` records :func:`validated_cpu`
in the bundle (``models[].info.int8.validated_cpu``); :func:`int8_cpu_warning` compares it with this CPU and
:class:`pand_runtime.Predictor` emits it as an :class:`Int8CpuWarning` when it loads an int8 bundle on the CPU provider.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, Mapping, Optional

from .device import cpu_features, cpu_info

__all__ = ["INT8_PATHS", "EXACT_PATHS", "RECORDED_FEATURES", "Int8CpuWarning", "int8_kernel_path",
           "has_exact_int8_kernels", "int8_kernels_saturate", "validated_cpu", "int8_cpu_warning"]

INT8_PATHS = ("amx", "avx512_vnni", "avx_vnni", "avx512bw", "avx2", "arm_i8mm", "arm_dotprod", "generic")
EXACT_PATHS = frozenset({"amx", "avx512_vnni", "avx_vnni", "arm_i8mm", "arm_dotprod"})
_SATURATING = frozenset({"avx512bw", "avx2"})
#: the flags recorded in a bundle (those that choose int8/fp32 kernels)
RECORDED_FEATURES = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile",
                     "amx_int8", "asimddp", "i8mm")


class Int8CpuWarning(UserWarning):
    """An int8 bundle runs on a CPU whose int8 kernels differ from the CPU it was validated on."""


def int8_kernel_path(features: Iterable[str]) -> str:
    """The int8 GEMM kernel family ONNX Runtime's CPU provider uses with these CPU ``features`` (see the table)."""
    f = set(features)
    if "amx_int8" in f:
        return "amx"
    if "avx512_vnni" in f:
        return "avx512_vnni"
    if "avx_vnni" in f:
        return "avx_vnni"
    if "avx512bw" in f:
        return "avx512bw"
    if "avx2" in f:
        return "avx2"
    if "i8mm" in f:
        return "arm_i8mm"
    if "asimddp" in f:
        return "arm_dotprod"
    return "generic"


def has_exact_int8_kernels(features: Iterable[str]) -> bool:
    """Whether a CPU with ``features`` has int8 dot-product instructions (VNNI, AMX, Arm dotprod/i8mm): exact int32
    sums, and the kernels that make u8s8 int8 clearly faster than fp32."""
    return int8_kernel_path(features) in EXACT_PATHS


def int8_kernels_saturate(features: Optional[Iterable[str]] = None) -> bool:
    """Whether ONNX Runtime's int8 kernels on a CPU with ``features`` (default: this CPU) can saturate: x86 without
    VNNI/AMX (``avx2``/``avx512bw``), or an unknown CPU (``generic``, to be safe)."""
    path = int8_kernel_path(cpu_features() if features is None else features)
    return path in _SATURATING or path == "generic"


def validated_cpu(cpuinfo_text: Optional[str] = None) -> Dict[str, Any]:
    """This CPU as a bundle records it: ``{model_name, features (the recorded flags it has), int8_path}``."""
    name = str(cpu_info(cpuinfo_text)["model_name"])
    feats = cpu_features(cpuinfo_text)
    return {"model_name": name, "features": [f for f in RECORDED_FEATURES if f in feats],
            "int8_path": int8_kernel_path(feats)}


def int8_cpu_warning(int8_info: Mapping[str, Any], features: Optional[Iterable[str]] = None) -> Optional[str]:
    """The warning for running a bundle with ``int8_info`` (``models[].info.int8``) on a CPU with ``features``
    (default: this CPU), or None when its int8 path is the validated one (or the bundle records none)."""
    validated = (int8_info or {}).get("validated_cpu") or {}
    was = validated.get("int8_path")
    if not was:
        return None
    here = int8_kernel_path(cpu_features() if features is None else features)
    if here == was:
        return None
    msg = (f"this int8 bundle was validated on {validated.get('model_name', '?')} with ONNX Runtime's '{was}' int8 "
           f"kernels; this CPU uses '{here}'")
    if here in _SATURATING and not int8_info.get("reduce_range"):
        msg += (": without VNNI these kernels add u8 x s8 product pairs into saturating int16 and the bundle's 8-bit "
                "weights can overflow them (microsoft/onnxruntime#12088), so agreement with PyTorch may drop. "
                "Re-export on a CPU like this one (pand-export ... --reduce-range) or check with pand-bench BUNDLE")
    elif was in _SATURATING and here in EXACT_PATHS:
        msg += ": results can differ slightly from the validated ones (exact int32 sums here). Check with pand-bench"
    else:
        msg += ": agreement with PyTorch may differ from the manifest's. Check with pand-bench BUNDLE"
    return msg
