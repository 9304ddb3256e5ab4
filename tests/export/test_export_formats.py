"""The format table drives file names, accepted precisions/targets, the formats a bundle is built from, and the CLI."""
import dataclasses

import pytest
from click.testing import CliRunner

from pand.errors import PandError
from pand_export.cli import cli
from pand_export.exporter import (EXPORT_FORMATS, FORMAT_CHOICES, ExportOptions, formats_of, get_format,
                                  validate_options)
from pand_runtime.manifest import ENGINE_NAME, ONNX_NAME


def test_each_row_names_its_file_backend_and_model_format():
    onnx, trt = get_format("onnx"), get_format("trt")
    assert (onnx.file, onnx.backend, onnx.model_format) == (ONNX_NAME, "onnxruntime", "onnx") == \
        ("model.onnx", "onnxruntime", "onnx")
    assert (trt.file, trt.backend, trt.model_format) == (ENGINE_NAME, "tensorrt", "tensorrt") == \
        ("model.engine", "tensorrt", "tensorrt")
    assert FORMAT_CHOICES == ("onnx", "trt", "all")
    with pytest.raises(PandError, match="unknown export format 'tflite'"):
        get_format("tflite")
    with pytest.raises(dataclasses.FrozenInstanceError):
        onnx.file = "other.onnx"


def test_a_format_brings_the_formats_it_is_built_from_first():
    assert [f.name for f in formats_of("onnx")] == ["onnx"]
    assert [f.name for f in formats_of("trt")] == ["onnx", "trt"]
    assert [f.name for f in formats_of("all")] == [f.name for f in EXPORT_FORMATS] == ["onnx", "trt"]


def test_int8_target_default_and_validity_come_from_the_table():
    assert validate_options(ExportOptions(format="onnx", precision="int8")).target == "cpu"
    assert validate_options(ExportOptions(format="trt", precision="int8")).target == "tensorrt"
    assert validate_options(ExportOptions(format="onnx", precision="fp32")).target is None
    assert validate_options(ExportOptions(format="onnx", precision="int8", target="tensorrt")).target == "tensorrt"
    for fmt in ("trt", "all"):
        with pytest.raises(PandError, match="--target cpu is not accepted by --format " + fmt):
            validate_options(ExportOptions(format=fmt, precision="int8", target="cpu"))
    with pytest.raises(PandError, match="only applies to --precision int8"):
        validate_options(ExportOptions(precision="fp16", target="cpu"))
    with pytest.raises(PandError, match="unknown precision 'int4'"):
        validate_options(ExportOptions(precision="int4"))


def test_a_row_that_refuses_a_precision_is_enforced(monkeypatch):
    import pand_export.exporter as ex

    fp32_only = dataclasses.replace(ex.EXPORT_FORMATS[0], precisions=("fp32",))
    monkeypatch.setattr(ex, "EXPORT_FORMATS", (fp32_only, ex.EXPORT_FORMATS[1]))
    with pytest.raises(PandError, match="unknown precision 'fp16' for --format onnx. Valid: fp32"):
        validate_options(ExportOptions(precision="fp16"))


def test_cli_choices_and_defaults_come_from_the_table_and_options(tmp_path):
    r = CliRunner().invoke(cli, [str(tmp_path), "--format", "tflite"])
    assert r.exit_code == 2 and "'tflite' is not one of 'onnx', 'trt', 'all'" in r.output
    r = CliRunner().invoke(cli, [str(tmp_path), "--precision", "int8", "--target", "gpu"])
    assert r.exit_code == 2 and "'gpu' is not one of 'cpu', 'tensorrt'" in r.output
    r = CliRunner().invoke(cli, ["--help"])
    # the ranges of the numeric options are part of the help (issue 31): "[default: 32; x>=1]"
    assert r.exit_code == 0 and "model.engine" in r.output and "[default: 32;" in " ".join(r.output.split())
    params = {p.name: p for p in cli.params}
    defaults = ExportOptions()
    for f in dataclasses.fields(ExportOptions):
        assert params[f.name].default == getattr(defaults, f.name), f.name


def test_a_rows_backend_decides_its_file_through_the_runtimes_one_table():
    """``ExportFormat.backend`` drives what the predictor loads: the file and manifest format of a row are those the
    runtime's backend table gives its backend (no second mapping)."""
    from pand_runtime.model_kinds import MODEL_KINDS, kind_of_backend
    from pand_runtime.predictor import BACKENDS

    for f in EXPORT_FORMATS:
        k = kind_of_backend(f.backend)
        assert (f.file, f.model_format) == (k.file, k.format)
    assert set(BACKENDS) - {"auto"} == {f.backend for f in EXPORT_FORMATS} == {k.backend for k in MODEL_KINDS}
    moved = dataclasses.replace(get_format("onnx"), backend="tensorrt")
    assert (moved.file, moved.model_format) == (ENGINE_NAME, "tensorrt")


def test_export_and_engine_return_one_result_type():
    from pand_export import ExportResult
    from pand_runtime.engine import EngineResult

    assert ExportResult is EngineResult


@pytest.mark.parametrize("args, flag", [(["--tf32"], "--tf32"), (["--workspace", "1"], "--workspace"),
                                        (["--timing-cache", "tc.cache"], "--timing-cache")])
def test_pand_export_refuses_an_option_the_chosen_format_does_not_take(tmp_path, args, flag):
    r = CliRunner().invoke(cli, [str(tmp_path), "--format", "onnx", *args])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert f"{flag} applies to --format trt only; --format onnx does not take it" in r.output
    assert list(tmp_path.iterdir()) == []  # refused before anything was read or written


def test_format_options_come_from_the_table():
    from pand_export.exporter import check_format_options

    for fmt in ("trt", "all"):  # trt takes its own options and those of the ONNX it is built from
        check_format_options(fmt, {n: n for n in ("tf32", "workspace_gb", "timing_cache", "opset", "precision")})
    check_format_options("onnx", {n: n for n in ("opset", "simplify", "exporter", "precision", "batch")})
    with pytest.raises(PandError, match="tf32= applies to --format trt only"):
        validate_options(ExportOptions(format="onnx", tf32=True))  # the Python API too (a value off its default)
