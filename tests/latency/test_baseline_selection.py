"""Baseline selection and device keys: a number recorded on another machine is never used (no timing here)."""
import json

from latency_support import select_baseline
from pand_runtime.device import device_identity, device_key
from pand_runtime.int8_check import has_exact_int8_kernels

ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC
flags\t\t: fpu sse sse2 avx avx2 fma

processor\t: 1
vendor_id\t: AuthenticAMD
"""
ZEN5 = ZEN3.replace("cpu family\t: 25", "cpu family\t: 26").replace("model\t\t: 1", "model\t\t: 2").replace(
    "avx avx2 fma", "avx avx2 fma avx512f avx512_vnni avx_vnni")
DESCRIBE = {"backend": "onnxruntime", "providers": ["CPUExecutionProvider"], "intra_op_threads": 2,
            "onnxruntime_version": "1.32.0"}


def _write(directory, ident, key, medians):
    (directory / f"{key}.json").write_text(json.dumps({"device_key": key, "identity": ident, "medians_ms": medians}))


def test_same_marketing_name_different_cpu_generation_gets_different_keys():
    a, b = device_identity(DESCRIBE, ZEN3), device_identity(DESCRIBE, ZEN5)
    assert a["model_name"] == b["model_name"] == "AMD EPYC"
    ka, kb = device_key(a), device_key(b)
    assert ka != kb and "f25m1" in ka and "f26m2" in kb and "avx512vnni" in kb and "avx512" not in ka
    assert ka.endswith("-t2-ort1.32.0") and " " not in ka and "/" not in kb
    assert not has_exact_int8_kernels(frozenset(ZEN3.split())) and has_exact_int8_kernels(frozenset(ZEN5.split()))
    # the ONNX Runtime version and the thread count are part of the key
    assert device_key({**DESCRIBE, "onnxruntime_version": "1.20.0"}, ZEN3) != ka
    assert device_key({**DESCRIBE, "intra_op_threads": 1}, ZEN3) != ka


def test_gpu_key_names_gpu_compute_capability_tensorrt_and_power_mode():
    d = {"backend": "tensorrt", "gpu_name": "NVIDIA Jetson AGX Orin", "compute_capability": [8, 7],
         "trt_version": "10.3.0", "power_mode": "pmode:0000"}
    assert device_key(d) == "gpu-nvidia-jetson-agx-orin-sm8.7-trt10.3.0-pmpmode-0000"
    assert device_key({**d, "power_mode": "pmode:0002"}) != device_key(d)
    assert device_key({**d, "trt_version": "10.16.0"}) != device_key(d)


def test_baseline_of_another_machine_is_never_used(tmp_path):
    zen3, zen5 = device_identity(DESCRIBE, ZEN3), device_identity(DESCRIBE, ZEN5)
    _write(tmp_path, zen5, device_key(zen5), {"resnet18-224/fp32/b1": 8.7})
    base, path, why = select_baseline(tmp_path, device_key(zen3), zen3)
    assert base is None and path is None
    # the reason names the other file, the key it was recorded for, this key and the fields that differ
    assert device_key(zen5) in why and device_key(zen3) in why and "family: '26' there vs '25' here" in why
    # a file renamed to this machine's key is still not used: the key recorded inside must match
    (tmp_path / f"{device_key(zen3)}.json").write_text((tmp_path / f"{device_key(zen5)}.json").read_text())
    base, path, why = select_baseline(tmp_path, device_key(zen3), zen3)
    assert base is None and f"{device_key(zen3)}.json was recorded for key '{device_key(zen5)}'" in why


def test_baseline_of_this_machine_is_used(tmp_path):
    zen3 = device_identity(DESCRIBE, ZEN3)
    _write(tmp_path, zen3, device_key(zen3), {"resnet18-224/fp32/b1": 25.0})
    base, path, why = select_baseline(tmp_path, device_key(zen3), zen3)
    assert why == "" and path.name == f"{device_key(zen3)}.json" and base["medians_ms"]["resnet18-224/fp32/b1"] == 25.0
