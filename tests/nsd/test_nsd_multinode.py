"""Multi-node training through torchrun's c10d rendezvous, on one machine: two torchrun agents, one per "node"
(``--nnodes 2 --nproc-per-node 1``, gloo on CPU), against one process; plus what happens when the nodes disagree.

The flags are the ones README.md and docs/distributed.md give for a real multi-node run
(``test_readme_multinode_command_uses_the_tested_flags`` keeps them in step).
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pand.config import config_dir, load_config
from pand.errors import PandError
from pand.nsd.teacher_cache import CACHE_SUBDIR, TeacherFeatureCache, _read_header
from pand.utils.distributed import (
    code_version, compare_fingerprints, init_distributed, run_fingerprint,
)

TINY = str(config_dir() / "tiny.yaml")
REPO = Path(__file__).resolve().parents[2]
ARGS = [
    "recipe=pand", "trainer.tensorboard=false", "data.synthetic.train_per_class=6", "data.synthetic.test_per_class=3",
    "data.synthetic.image_size=32", "student.image_size=32", "student.resize_size=36", "psc.epochs=1", "nsd.epochs=1",
    "nsd.batch_size=16", "nsd.teacher_cache.views=2", "nsd.teacher_cache.shard_size=16",
]
# the launcher flags of README.md's multi-node command; only the values differ (2 nodes x 1 process, loopback)
NODE_FLAGS = ("--nnodes", "--nproc-per-node", "--rdzv-backend", "--rdzv-endpoint", "--rdzv-id")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(port: int, *cli_args: str) -> list:
    flags = dict(zip(NODE_FLAGS, ("2", "1", "c10d", f"127.0.0.1:{port}", "pand-test")))
    return [sys.executable, "-m", "torch.distributed.run", *[x for kv in flags.items() for x in kv],
            "--rdzv-conf", "join_timeout=60", "-m", "pand.cli", TINY, *cli_args]


def _run_nodes(commands, timeout: float = 240):
    """Start every command at once (each in its own process group) and wait; on timeout kill them all and fail."""
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PAND_INIT_TIMEOUT_S="60")
    procs = [subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True) for cmd in commands]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=timeout))
    except subprocess.TimeoutExpired:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        pytest.fail(f"{len(commands)} processes did not finish within {timeout} s")
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outs)]


@pytest.mark.ddp
@pytest.mark.timeout(600)
def test_two_torchrun_nodes_match_single_process_and_share_one_teacher_cache(tmp_path):
    port = _free_port()
    node_args = [*ARGS, f"cache_dir={tmp_path / 'cache'}", "--run-dir", str(tmp_path / "nodes")]
    single_run = [sys.executable, "-m", "pand.cli", TINY, *ARGS, f"cache_dir={tmp_path / 'cache1'}",
                  "--run-dir", str(tmp_path / "single")]  # the reference, alongside (its own cache directory)
    results = _run_nodes([_torchrun(port, *node_args), _torchrun(port, *node_args), single_run])
    for rc, _, err in results:
        assert rc == 0, err[-3000:]
    single = json.loads((tmp_path / "single" / "summary.json").read_text())

    # Stage NSD as in the 2-process test: same global batch, one writer
    nodes = json.loads((tmp_path / "nodes" / "summary.json").read_text())
    assert nodes["test_images"] == single["test_images"] == 72
    assert abs(nodes["val_top1"] - single["val_top1"]) <= 0.1
    assert abs(nodes["final_losses"]["ce"] - single["final_losses"]["ce"]) <= 0.1 * single["final_losses"]["ce"]
    recs = [json.loads(line) for line in (tmp_path / "nodes" / "nsd" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in recs if r["kind"] == "epoch"] == [0]
    assert sum(r["kind"] == "test" for r in recs) == 1

    # one cache directory, built by both nodes: each wrote its own shards, one complete manifest, no temp files
    (root,) = (tmp_path / "cache" / CACHE_SUBDIR).iterdir()
    shards = sorted(root.glob("shard-*.safetensors"))
    writers = [json.loads(_read_header(p)["__metadata__"]["rank"]) for p in shards]
    assert len(shards) >= 2 and set(writers) == {0, 1}, writers
    assert writers == [s % 2 for s in range(len(shards))]  # dealt round-robin
    assert sorted(p.name for p in root.iterdir()) == sorted([*(p.name for p in shards), "manifest.json"])
    built = TeacherFeatureCache(root)
    (ref_root,) = (tmp_path / "cache1" / CACHE_SUBDIR).iterdir()
    ref = TeacherFeatureCache(ref_root)
    assert built.count == ref.count and built.views == ref.views == 2
    for a, b in zip(built.shards, ref.shards):  # the same features as one process builds
        np.testing.assert_allclose(np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32), atol=2e-3)


@pytest.mark.ddp
@pytest.mark.timeout(120)
def test_a_missing_node_ends_the_launch_at_the_join_timeout(tmp_path):
    """One agent of --nnodes 2: torchrun's rendezvous gives up after join_timeout (docs/distributed.md), no hang."""
    cmd = _torchrun(_free_port(), *ARGS, f"cache_dir={tmp_path / 'cache'}", "--run-dir", str(tmp_path / "run"))
    cmd[cmd.index("join_timeout=60")] = "join_timeout=3"
    ((rc, _, err),) = _run_nodes([cmd], timeout=90)
    assert rc != 0 and "RendezvousTimeoutError" in err, err[-3000:]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.ddp
@pytest.mark.timeout(300)
def test_torchrun_nodes_with_different_configs_stop_with_the_difference_named(tmp_path):
    port = _free_port()
    base = [*ARGS, f"cache_dir={tmp_path / 'cache'}", "--run-dir", str(tmp_path / "run")]
    results = _run_nodes([_torchrun(port, *base), _torchrun(port, *base, "nsd.epochs=3")], timeout=180)
    for rc, _, err in results:
        assert rc != 0
        assert "disagree" in err and "nsd.epochs=" in err and "config hash" in err, err[-3000:]
    assert not (tmp_path / "run" / "config.yaml").exists()  # stopped before writing anything


@pytest.mark.ddp
@pytest.mark.timeout(300)
@pytest.mark.parametrize("differs", ["config", "run_dir"])
def test_ranks_that_disagree_all_stop_naming_the_difference(tmp_path, differs):
    """Two gloo ranks started by hand (the environment torchrun gives its workers): a different override on rank 1,
    or a run directory rank 1 does not share. Both ranks exit with the same message, before any training."""
    port = _free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", WORLD_SIZE="2", LOCAL_RANK="0",
               LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), PAND_INIT_TIMEOUT_S="60")
    procs = []
    for rank in (0, 1):
        extra = ["nsd.epochs=3"] if differs == "config" and rank == 1 else []
        run_dir = tmp_path / (f"run{rank}" if differs == "run_dir" else "run")
        cmd = [sys.executable, "-m", "pand.cli", TINY, *ARGS, f"cache_dir={tmp_path / 'cache'}", *extra,
               "--run-dir", str(run_dir)]
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=dict(env, RANK=str(rank)), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, start_new_session=True))
    try:
        errs = [p.communicate(timeout=120)[1] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    expected = {"config": ["disagree", "rank 1 (", "nsd.epochs=3 (rank 0: 1)"],
                "run_dir": ["is not shared between the nodes", "rank 1 (", str(tmp_path / "run0")]}[differs]
    for p, err in zip(procs, errs):
        assert p.returncode == 2, err[-3000:]
        assert all(x in err for x in expected), err[-3000:]
    assert not (tmp_path / "run1").exists() and not (tmp_path / "cache").exists()  # stopped before any work


def test_readme_multinode_command_uses_the_tested_flags():
    for doc in (REPO / "README.md", REPO / "docs" / "distributed.md"):
        text = re.sub(r"\\\n\s*", "", doc.read_text())  # join continued shell lines
        lines = [ln for ln in text.splitlines() if re.match(r"\s*(srun .*)?torchrun --nnodes", ln)]
        assert lines, f"{doc.name}: no multi-node torchrun command"
        for ln in lines:
            used = tuple(f for f in re.findall(r"(--[a-z-]+)", ln.split(" -m ")[0]) if f != "--rdzv-conf")
            assert used[:len(NODE_FLAGS)] == NODE_FLAGS and "-m pand.cli" in ln, ln


# ----------------------------------------------------------------------------------------------------------------
# the checks themselves, in one process
# ----------------------------------------------------------------------------------------------------------------
def _fp(*overrides, code=None, host="node-a"):
    fp = run_fingerprint(load_config(TINY, list(overrides)))
    fp["host"] = host
    if code:
        fp["code"] = {**fp["code"], **code}
    return fp


def test_fingerprints_compare_config_and_code():
    a = _fp()
    assert compare_fingerprints([a, _fp(host="node-b")]) is None
    assert compare_fingerprints([a, _fp("cache_dir=/local/scratch", host="node-b")]) is None  # node-local
    msg = compare_fingerprints([a, _fp(host="node-b"), _fp("nsd.epochs=7", "trainer.seed=3", host="node-c")])
    assert "rank 2 (node-c)" in msg and "nsd.epochs=7 (rank 0: 2)" in msg and "trainer.seed=3 (rank 0: 0)" in msg
    assert "rank 1" not in msg
    msg = compare_fingerprints([a, _fp(code={"source": "0123abcd", "git": "v0.1.0-3-gdeadbee-dirty"}, host="n-b")])
    assert "rank 1 (n-b) runs different pand code" in msg and "v0.1.0-3-gdeadbee-dirty" in msg
    assert "config hash" not in msg
    v = code_version()
    assert v["pand"] and len(v["source"]) == 16 and v == code_version()


def test_stage_and_resume_are_part_of_the_fingerprint():
    cfg = load_config(TINY, [])
    assert run_fingerprint(cfg, "nsd")["config_hash"] != run_fingerprint(cfg, "all")["config_hash"]
    assert run_fingerprint(cfg, resume=True)["config_hash"] != run_fingerprint(cfg)["config_hash"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("rank", [0, 1])
def test_process_group_join_timeout_names_the_endpoint(monkeypatch, rank):
    """rank 0 waits for a rank that never comes; rank 1 finds no rank 0: both fail in bounded time, naming
    MASTER_ADDR:MASTER_PORT."""
    port = _free_port()
    for k, v in {"RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("TORCHELASTIC_USE_AGENT_STORE", raising=False)
    with pytest.raises(PandError, match=rf"rank {rank} of 2 .* 127\.0\.0\.1:{port} within 2 s.*PAND_INIT_TIMEOUT_S"):
        init_distributed("cpu", init_timeout_s=2)
    import torch.distributed as dist

    assert not dist.is_initialized()


def test_init_timeout_env_is_validated(monkeypatch):
    for k, v in {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1",
                 "PAND_INIT_TIMEOUT_S": "soon"}.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(PandError, match="PAND_INIT_TIMEOUT_S='soon'"):
        init_distributed("cpu")
