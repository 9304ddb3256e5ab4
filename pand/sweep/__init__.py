"""``pand-sweep``: pick the student for a latency budget.

Stage PSC once, then per student Stage NSD, ``pand-export`` in each precision and a measurement of each bundle on
this machine's backend; the reports put validation top-1 against p50 latency with the Pareto front and, under a
budget, recommend the most accurate bundle on *validation* (test beside it). Modules: :mod:`.plan` (which students
and precisions, checked first), :mod:`.run` (the orchestration, resumable), :mod:`.flops` (MACs from the ONNX graph),
:mod:`.pareto` (front and recommendation, pure), :mod:`.report` (sweep.json, sweep.md, pareto.png), :mod:`.cli`.
"""
