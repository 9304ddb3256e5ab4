"""Where a Stage NSD step of the demo spends its time on this CPU, and what each CPU option buys (ratios).

    .venv/bin/python bench/nsd_step.py            # ~2 min on 2 cores; writes runs/nsd_step/nsd_step.{json,md}
    .venv/bin/python bench/nsd_step.py --compile  # also torch.compile (adds its compile time)

The demo's setting (configs/demo.yaml: ResNet-18 student at 64 px, batch 16, the demo teacher, PAND's criterion)
is taken apart into the parts of one optimiser step, each timed on the same batches, interleaved round by round so
that a machine slowing down for a while affects every variant alike (median over rounds):

* ``data``: the next batch from the training loader (PNG decode + random resized crop + flip + normalise);
* ``teacher``: the live teacher's features of the batch (re-normalise, resize, forward);
* ``student``: forward of student + alignment heads, PAND's loss, backward and the AdamW step;
* ``validation``: one pass over the 480 validation images, charged per training step at the demo's
  ``nsd.eval_every`` (17 validations in a run).

Then the options, each as a ratio to the default measured in the same rounds: ``channels_last`` memory format,
one vs two intra-op threads, ``torch.compile`` (``--compile``), bf16 autocast (only where the CPU has native bf16
matrix instructions, AMX or AVX512-BF16; elsewhere reported as not applicable), and the teacher cache (a cached
view is a memory read: the ``teacher`` part drops out). The teacher's weights do not change the cost, so a randomly
initialised teacher of the demo's architecture is used (no pre-training needed).
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import click

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pand.config import config_dir, load_config  # noqa: E402
from pand.utils.io import atomic_write_json, atomic_write_text  # noqa: E402


def cpu_flags() -> List[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line.split(":", 1)[1].split()
    except OSError:
        pass
    return []


def timed(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--rounds", type=click.IntRange(min=3), default=12, show_default=True, help="Interleaved rounds.")
@click.option("--compile", "do_compile", is_flag=True, help="Also time torch.compile (adds the compile time).")
@click.option("--out", default="runs/nsd_step", show_default=True, help="Output folder.")
def main(rounds, do_compile, out):
    """Time the parts of a demo Stage NSD step and the CPU options, side by side in one run."""
    import torch

    from pand.data.base import DataSplits  # noqa: F401 - documents the type of splits
    from pand.models.teacher import create_teacher
    from pand.models.teacher_source import LiveTeacher
    from pand.nsd.criterion import NSDCriterion
    from pand.nsd.engine import build_data, build_models, build_optim
    from pand.engine.loop import evaluate
    from pand.psc import handcrafted_anchors
    from pand.train import build_run_splits
    from pand.utils.distributed import DistInfo

    cfg = load_config(config_dir() / "demo.yaml", ["trainer.tensorboard=false"])
    dev = torch.device("cpu")
    splits = build_run_splits(cfg)
    teacher = create_teacher(cfg.teacher)
    anchors = handcrafted_anchors(teacher, splits.prompts()).float()
    source = LiveTeacher(teacher, cfg.student.mean, cfg.student.std)
    loaders = build_data(cfg.nsd, cfg.trainer, splits, DistInfo(), dev)
    loaders.train.sampler.set_epoch(0, 0)
    batches = []
    it = iter(loaders.train)
    for _ in range(4):
        batches.append(next(it))
    crit = NSDCriterion.from_config(cfg.nsd, cfg.recipe)

    def make(channels_last: bool = False, compiled: bool = False):
        torch.manual_seed(0)
        model = build_models(cfg.student, cfg.recipe, len(splits.class_names), source.embed_dim, dev,
                             bool(cfg.trainer.channels_last))
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        opt, _ = build_optim(cfg.nsd, model.parameters())
        fwd = torch.compile(model) if compiled else model
        return model, fwd, opt

    def student_step(state, k: int, channels_last=False, bf16=False):
        model, fwd, opt = state
        x, y, _ = batches[k % len(batches)]
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        f_t = feats[k % len(batches)]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = fwd(x, f_t, anchors)
        total, _, _ = crit(out, y, f_t, anchors, 5)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()

    with torch.no_grad():
        feats = [source.features(b[0], b[2]) for b in batches]
    threads0 = torch.get_num_threads()
    flags = cpu_flags()
    native_bf16 = any(f in flags for f in ("amx_bf16", "avx512_bf16"))
    variants: Dict[str, Callable[[int], None]] = {}
    base = make()
    cl = make(channels_last=True)
    variants["student step (fp32, contiguous)"] = lambda k: student_step(base, k)
    variants["student step, channels_last"] = lambda k: student_step(cl, k, channels_last=True)

    def one_thread(k):
        torch.set_num_threads(1)
        try:
            student_step(base, k)
        finally:
            torch.set_num_threads(threads0)

    if threads0 > 1:
        variants["student step, 1 thread"] = one_thread
    if native_bf16:
        bf = make()
        variants["student step, bf16 autocast"] = lambda k: student_step(bf, k, bf16=True)
    compile_s = None
    if do_compile:
        comp = make(compiled=True)
        compile_s = timed(lambda: student_step(comp, 0))
        variants["student step, torch.compile"] = lambda k: student_step(comp, k)
    data_it = [iter(loaders.train)]

    def data(k):
        try:
            next(data_it[0])
        except StopIteration:
            data_it[0] = iter(loaders.train)
            next(data_it[0])

    variants["data (next batch)"] = data
    variants["teacher (live features)"] = lambda k: source.features(batches[k % 4][0], batches[k % 4][2])
    val_times: List[float] = []
    for k in range(2):  # warm-up of every variant
        for fn in variants.values():
            fn(k)
    times: Dict[str, List[float]] = {n: [] for n in variants}
    for r in range(rounds):
        for name, fn in variants.items():
            times[name].append(timed(lambda: fn(r)))
        if r % max(1, rounds // 3) == 0:
            val_times.append(timed(lambda: evaluate(base[0].student, loaders.val, dev, DistInfo(), "fp32", False)))
    med = {n: statistics.median(v) for n, v in times.items()}
    steps_per_epoch = len(loaders.train)
    per_val = statistics.median(val_times)
    val_per_step = per_val / (steps_per_epoch * int(cfg.nsd.eval_every))
    s = med["student step (fp32, contiguous)"]
    parts = {"data": med["data (next batch)"], "teacher": med["teacher (live features)"], "student": s,
             "validation (per step)": val_per_step}
    total = sum(parts.values())
    lines = [f"# Stage NSD step of the demo on this CPU ({threads0} threads, batch {cfg.nsd.batch_size}, "
             f"{rounds} interleaved rounds, median)", "", "| part | ms per step | share |", "|---|---|---|"]
    lines += [f"| {k} | {1000 * v:.1f} | {100 * v / total:.0f}% |" for k, v in parts.items()]
    lines += ["", "| option | student step ms | speed-up vs default |", "|---|---|---|"]
    for n, v in med.items():
        if n.startswith("student step"):
            lines.append(f"| {n} | {1000 * v:.1f} | {s / v:.2f}x |")
    if not native_bf16:
        lines.append("| bf16 autocast | n/a | not applicable: no AMX / AVX512-BF16 on this CPU |")
    if compile_s is not None:
        lines.append(f"\ntorch.compile: first step (compile) {compile_s:.1f} s")
    cached = total - parts["teacher"]
    lines += ["", f"Teacher cache (the teacher part becomes a memory read): {total / cached:.2f}x per step."]
    text = "\n".join(lines) + "\n"
    out = Path(out)
    atomic_write_json(out / "nsd_step.json", {"median_s": med, "parts_s": parts, "threads": threads0,
                                              "validation_pass_s": per_val, "compile_s": compile_s,
                                              "native_bf16": native_bf16, "rounds": rounds})
    atomic_write_text(out / "nsd_step.md", text)
    click.echo(text)


if __name__ == "__main__":
    main()
