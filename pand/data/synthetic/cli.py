"""``python -m pand.data.synthetic OUT_DIR [--seed N --image-size N --train-per-class N ...]``."""
from __future__ import annotations

import json
from typing import Optional, Sequence

import click

from pand.errors import PandError

from .generate import generate_synthetic
from .settings import SyntheticCfg

__all__ = ["main"]


def main(argv: Optional[Sequence[str]] = None) -> None:
    """CLI entry point (``python -m pand.data.synthetic OUT_DIR ...``)."""
    defaults = SyntheticCfg()

    @click.command(context_settings={"help_option_names": ["-h", "--help"]})
    @click.argument("out_dir", type=click.Path(file_okay=False))
    @click.option("--seed", type=int, default=defaults.seed, show_default=True)
    @click.option("--image-size", type=int, default=defaults.image_size, show_default=True)
    @click.option("--train-per-class", type=int, default=defaults.train_per_class, show_default=True)
    @click.option("--val-per-class", type=int, default=defaults.val_per_class, show_default=True)
    @click.option("--test-per-class", type=int, default=defaults.test_per_class, show_default=True)
    @click.option("--web-per-class", type=int, default=defaults.web_per_class, show_default=True,
                  help="Captioned web-pool images per class (teacher pre-training), disjoint from the splits.")
    @click.option("--num-body-colors", type=int, default=defaults.num_body_colors, show_default=True)
    @click.option("--num-wing-patterns", type=int, default=defaults.num_wing_patterns, show_default=True)
    @click.option("--num-beak-shapes", type=int, default=defaults.num_beak_shapes, show_default=True)
    @click.option("--num-crests", type=int, default=defaults.num_crests, show_default=True)
    @click.option("--clutter", type=int, default=defaults.clutter, show_default=True)
    @click.option("--noise-std", type=float, default=defaults.noise_std, show_default=True)
    @click.option("--overwrite", is_flag=True, help="Replace OUT_DIR if it holds something else.")
    def cli(out_dir, overwrite, **kwargs):
        """Write the synthetic fine-grained benchmark to OUT_DIR (ImageFolder layout + classes/captions JSON)."""
        try:
            out = generate_synthetic(out_dir, kwargs, overwrite=overwrite)
        except PandError as e:
            raise click.ClickException(str(e)) from None
        meta = json.loads((out / "classes.json").read_text(encoding="utf-8"))
        click.echo(f"wrote {out}: {len(meta['class_names'])} classes "
                   f"(base {len(meta['base_classes'])}, novel {len(meta['novel_classes'])})")

    cli.main(args=list(argv) if argv is not None else None, prog_name="python -m pand.data.synthetic")
