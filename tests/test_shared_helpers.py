"""Shared helpers live once, in ``pand/utils/`` (issue 27): config flattening, the cache/checkpoint digests; and the
default resize ratio is the runtime spec's constant, never a literal."""
import ast

from pand.utils.distributed import NODE_LOCAL_KEYS, run_fingerprint
from pand.utils.flatten import flatten_config, key_under
from source_tree import parsed_sources

#: helper -> the one module (relative path) that defines it
ONCE = {name: "pand/utils/flatten.py" for name in ("flatten_config", "_flatten", "key_under")}
ONCE.update({name: "pand/utils/digest.py" for name in ("tensor_sha256", "samples_hash", "content_hash",
                                                          "describe_transform", "stat_hash", "mapping_sha256")})


def test_each_shared_helper_is_defined_once_in_pand_utils():
    where = {}
    for rel, tree in parsed_sources():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in ONCE:
                where.setdefault(node.name, []).append(rel)
    assert {k: v for k, v in where.items() if v != [ONCE[k]]} == {}
    assert set(where) == set(ONCE) - {"_flatten"}


def test_no_literal_resize_ratio_outside_the_runtime_spec():
    hits = [f"{rel}:{n.lineno}" for rel, tree in parsed_sources() if rel != "runtime/preprocess_spec.py"
            for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value == 0.875]
    assert hits == []


def test_flattening_and_key_prefixes():
    assert flatten_config({"a": {"b": 1, "c": [1, 2], "e": {}}, "d": None}) == {"a.b": 1, "a.c": [1, 2], "d": None}
    assert key_under("a.b", ["a"]) and key_under("a", ["a"])
    assert not key_under("a.bc", ["a.b"]) and not key_under("a", ["a.b"])


def test_the_run_fingerprint_drops_node_local_keys_only():
    local = sorted(NODE_LOCAL_KEYS)[0]
    head, _, leaf = local.rpartition(".")
    nested = {}
    node = nested
    for part in head.split(".") if head else []:
        node = node.setdefault(part, {})
    node[leaf] = "/here"
    node[leaf + "_x"] = 1  # a sibling key sharing the prefix is not node-local
    flat = run_fingerprint(nested)["config"]
    assert local not in flat and (f"{head}.{leaf}_x" if head else f"{leaf}_x") in flat
