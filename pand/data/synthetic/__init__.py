"""Synthetic fine-grained benchmark: procedural "birds" whose classes differ by one visual attribute.

Classes are the cartesian product of four attributes (``data.synthetic``: :class:`SyntheticCfg`):

* body colour (``num_body_colors`` of red, blue, yellow, green, purple, orange, pink, cyan),
* wing pattern (``num_wing_patterns`` of plain, striped, spotted, checkered),
* beak shape (``num_beak_shapes`` of hooked, straight, conical),
* crest (``num_crests``: 1 = never, 2 = absent / present).

The default 4 x 3 x 2 x 1 gives 24 classes; the nearest classes differ in exactly one attribute, which is what
makes the task fine-grained. The default 24 x 60 images of 64 px take a few seconds on one CPU core.

**Web pool.** ``web_per_class > 0`` also renders a captioned *web pool* of every class (the stand-in for the
web-scale image-text data a CLIP teacher is pre-trained on, e.g. LAION holding CUB species), from random streams
of its own, so disjoint from the student's train, val and test images.

Modules, in dependency order:

* :mod:`~pand.data.synthetic.attributes` - the attribute vocabulary;
* :mod:`~pand.data.synthetic.settings` - :class:`SyntheticCfg` and its checks;
* :mod:`~pand.data.synthetic.classes` - :class:`BirdClass` and the class order (base / novel halves);
* :mod:`~pand.data.synthetic.captions` - canonical and web-pool captions;
* :mod:`~pand.data.synthetic.render` - :func:`render_bird`, one image;
* :mod:`~pand.data.synthetic.generate` - the benchmark on disk (layout, hash, atomic write, cache);
* :mod:`~pand.data.synthetic.dataset` - reading it back (the ``synthetic`` dataset loader, the web pool);
* :mod:`~pand.data.synthetic.cli` - ``python -m pand.data.synthetic OUT_DIR [--seed N --image-size N ...]``.
"""
from .attributes import AXES, BEAK_SHAPES, BODY_COLORS, CRESTS, WING_PATTERNS
from .captions import caption_fits, caption_for, web_caption
from .classes import BirdClass, class_order, synthetic_classes
from .cli import main
from .dataset import LAYOUT, WebSample, load_synthetic, load_web_pool
from .generate import ensure_synthetic, generate_synthetic, synthetic_hash
from .render import render_bird
from .settings import SyntheticCfg, synthetic_cfg_dict

__all__ = [
    "AXES", "BODY_COLORS", "WING_PATTERNS", "BEAK_SHAPES", "CRESTS", "BirdClass", "SyntheticCfg", "synthetic_cfg_dict",
    "synthetic_hash", "class_order", "synthetic_classes", "caption_for", "web_caption", "caption_fits", "render_bird",
    "generate_synthetic", "ensure_synthetic", "load_synthetic", "LAYOUT", "WebSample", "load_web_pool", "main",
]
