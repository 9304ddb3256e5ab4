"""Atomic writes honour the umask (issue #29 item 4): 0644 files and 0755 folders under umask 022, 0600/0700 under
077 (mkstemp/mkdtemp alone give 0600/0700 whatever the umask); a bundle's bench/ folder does not block a re-export."""
import os
import stat
from contextlib import contextmanager

import pytest

from pand_runtime.io import atomic_path, atomic_write_json, atomic_write_text, current_umask, make_staging_dir
from pand_runtime.manifest import check_replaceable


@contextmanager
def umask(mask):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _mode(p):
    return stat.S_IMODE(p.stat().st_mode)


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700),
                                                       (0o002, 0o664, 0o775)])
def test_atomic_files_and_staging_folders_get_the_umask_mode(tmp_path, mask, file_mode, dir_mode):
    with umask(mask):
        assert current_umask() == mask
        atomic_write_text(tmp_path / "a.txt", "x")
        atomic_write_json(tmp_path / "sub" / "b.json", {"a": 1})
        with atomic_path(tmp_path / "c.bin") as tmp:  # a writer that replaces the temporary file (as safetensors may)
            tmp.unlink()
            tmp.write_bytes(b"y")
            os.chmod(tmp, 0o600)
        staging = make_staging_dir(tmp_path, "bundle")
    assert [_mode(tmp_path / n) for n in ("a.txt", "sub/b.json", "c.bin")] == [file_mode] * 3
    assert _mode(staging) == dir_mode and staging.name.startswith(".bundle.tmp-")


def test_a_bundles_bench_folder_is_replaced_with_it(tmp_path, rt_bundle):
    import shutil

    b = tmp_path / "b"
    shutil.copytree(rt_bundle, b)
    (b / "bench").mkdir()
    (b / "bench" / "pand-bench.json").write_text("{}")
    check_replaceable(b)  # pand-bench's results are replaced with the bundle they measured
    (b / "bench" / "notes.txt").write_text("mine")
    with pytest.raises(Exception, match="bench"):
        check_replaceable(b)  # anything else in it may be the user's: refused
