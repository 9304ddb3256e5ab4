"""The demo's printed step numbers: counted as the steps run, as many as its docstring lists."""
import re

import pytest

import pand.demo.__main__ as demo


def test_docstring_lists_as_many_steps_as_the_demo_prints():
    numbered = re.findall(r"^(\d+)\. ", demo.__doc__, flags=re.M)
    assert [int(k) for k in numbered] == list(range(1, demo.STEPS + 1))


def test_steps_are_numbered_in_the_order_they_run(capsys):
    step = demo._Steps(3)
    for title in ("a", "b", "c"):
        step(title)
    assert re.findall(r"== (\d+/\d+) (\w)", capsys.readouterr().out) == [("1/3", "a"), ("2/3", "b"), ("3/3", "c")]
    with pytest.raises(RuntimeError, match="more than its 3 steps"):
        step("d")
