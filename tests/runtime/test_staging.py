"""The one stage-publish-cleanup step of pand-export and pand-engine (runtime/staging.py)."""
import pytest

from pand_runtime.errors import PandError
from pand_runtime.manifest import MANIFEST_NAME
from pand_runtime.staging import staged_bundle


def _leftovers(out):
    return sorted(p.name for p in out.parent.iterdir() if p.name != out.name)


def test_a_finished_block_replaces_the_old_bundle_with_nothing_left_over(bundle_copy):
    out = bundle_copy  # an earlier pand bundle: replaceable
    old = (out / MANIFEST_NAME).read_text()
    with staged_bundle(out, "the bundle", "Nothing was written") as staging:
        assert staging.parent == out.parent and staging != out
        (staging / MANIFEST_NAME).write_text('{"new": true}')
        assert (out / MANIFEST_NAME).read_text() == old  # published only at the end
    assert (out / MANIFEST_NAME).read_text() == '{"new": true}' and _leftovers(out) == []


def test_a_failing_block_leaves_the_old_bundle_and_no_staging(bundle_copy):
    out = bundle_copy
    old = (out / MANIFEST_NAME).read_text()
    with pytest.raises(ValueError, match="parity"):
        with staged_bundle(out, "the bundle", "Nothing was written") as staging:
            (staging / "model.onnx").write_bytes(b"half")
            raise ValueError("parity crashed")
    assert (out / MANIFEST_NAME).read_text() == old and _leftovers(out) == []


def test_a_write_failure_is_a_pand_error_naming_the_bundle_and_the_advice(tmp_path):
    out = tmp_path / "new" / "b"
    with pytest.raises(PandError, match=r"cannot write the engine bundle .*b: .*disk full.*\. Nothing was written"):
        with staged_bundle(out, "the engine bundle", "Nothing was written"):
            raise OSError(28, "disk full")
    assert not out.exists() and _leftovers(out) == []
