"""Equal tensors and metadata give equal safetensors bytes, whatever process writes them.

safetensors keeps the metadata in a hash map whose order changes from process to process; ``save_tensors`` sorts it
(``canonical_safetensors_header``), so a file's sha256 (the teacher's identity, a bundle's ``source.sha256``) is a
function of its contents."""
from __future__ import annotations

import hashlib
import subprocess
import sys

import torch

from pand.utils.io import canonical_safetensors_header, load_tensors

WRITE = r"""
import sys, torch
from pand.utils.io import save_tensors
save_tensors(sys.argv[1], {"w": torch.arange(6.).reshape(2, 3), "n": torch.tensor(3)},
             {"zeta": 1, "alpha": "a", "mid": [1, 2], "name": "caf\u00e9", "beta": {"k": None}, "gamma": 2.5})
"""


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_equal_contents_give_equal_bytes_across_processes(tmp_path):
    paths = [tmp_path / f"w{i}.safetensors" for i in range(5)]
    for p in paths:
        subprocess.run([sys.executable, "-c", WRITE, str(p)], check=True)
    assert len({_sha(p) for p in paths}) == 1
    tensors, meta = load_tensors(paths[0])
    torch.testing.assert_close(tensors["w"], torch.arange(6.).reshape(2, 3))
    assert meta == {"zeta": 1, "alpha": "a", "mid": [1, 2], "name": "caf\u00e9", "beta": {"k": None}, "gamma": 2.5}


def test_the_header_is_rewritten_in_place_keeping_the_data(tmp_path):
    from safetensors.torch import save_file

    p = tmp_path / "raw.safetensors"
    save_file({"x": torch.arange(4.)}, str(p), metadata={"b": "2", "a": "1", "c": "3"})
    size = p.stat().st_size
    assert canonical_safetensors_header(p)
    assert p.stat().st_size == size
    n = int.from_bytes(p.read_bytes()[:8], "little")
    header = p.read_bytes()[8:8 + n].decode()
    assert header.index('"a"') < header.index('"b"') < header.index('"c"')
    tensors, meta = load_tensors(p)
    torch.testing.assert_close(tensors["x"], torch.arange(4.))
    assert meta == {"a": 1, "b": 2, "c": 3}
