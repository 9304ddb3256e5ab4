"""pand-bench says what its accuracy columns are measured on and gives CV advice for the row's device (issue #29
items 2 and 5), and pand-bench --help documents every option (item 6)."""
from click.testing import CliRunner

from pand_runtime.bench import _cli
from pand_runtime.bench_accuracy import parity_source
from pand_runtime.bench_report import accuracy_notes, cv_warnings, render_markdown, render_text
from pand_runtime.bench_rows import BenchRow


class _M:
    def __init__(self, parity):
        self.parity = parity


def test_parity_images_are_labelled_as_a_subset_or_the_whole_split():
    assert parity_source(_M({"split": "test", "split_images": 360}), 256) == \
        "256 parity images (a seeded subset of the 360 test images)"
    assert parity_source(_M({"split": "test", "split_images": 360}), 360) == \
        "all 360 test images (the bundle's parity images)"
    assert parity_source(_M({"split": "random"}), 32).startswith("32 random parity images (no labels")
    assert parity_source(None, 8) == "8 parity images (test split)"  # an older bundle: no split size recorded


def test_notes_name_the_images_of_each_column_and_which_rows_when_they_differ():
    a = BenchRow("b/a", "a", eval_source="all 12 images of data/test", agreement_source="12 parity images")
    b = BenchRow("b/b", "b", eval_source="all 12 images of data/test", agreement_source="12 parity images")
    assert accuracy_notes([a, b]) == ["top-1 %: on all 12 images of data/test",
                                      "agree % / max abs diff: vs the PyTorch logits stored in the bundle, on 12 "
                                      "parity images"]
    c = BenchRow("b/c", "c", eval_source="8 parity images")
    notes = accuracy_notes([a, c])
    assert "top-1 % (a): on all 12 images of data/test" in notes and "top-1 % (c): on 8 parity images" in notes
    assert "top-1 % (a)" in render_text([a, c]) and "top-1 % (c)" in render_markdown([a, c])


def test_cv_advice_fits_the_device():
    cpu = BenchRow("x", "cpu", backend="onnxruntime", cv=0.2, details={"providers": ["CPUExecutionProvider"]})
    torch_cpu = BenchRow("x", "pt", backend="pytorch", cv=0.2, details={"device": "cpu"})
    gpu = BenchRow("x", "gpu", backend="tensorrt", cv=0.2)
    ort_cuda = BenchRow("x", "cuda", backend="onnxruntime", cv=0.2,
                        details={"providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]})
    w = dict(zip(["cpu", "pt", "gpu", "cuda"], cv_warnings([cpu, torch_cpu, gpu, ort_cuda], 0.05)))
    for k in ("cpu", "pt"):
        assert "nvidia-smi" not in w[k] and "jetson_clocks" not in w[k] and "governor" in w[k]
    for k in ("gpu", "cuda"):
        assert "nvidia-smi -lgc" in w[k] and "jetson_clocks" in w[k]


def test_every_option_has_help_and_the_command_a_description():
    cmd = _cli()
    missing = [p.name for p in cmd.params if getattr(p, "help", None) is None and p.param_type_name == "option"]
    assert not missing, missing
    out = CliRunner().invoke(cmd, ["--help"]).output
    assert "Benchmark exported bundles" in out and "--output" in out and "bench/" in out

