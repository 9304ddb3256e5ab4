"""Reading a written synthetic benchmark: its splits as a dataset (:func:`load_synthetic`) and its web pool."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List

from pand.errors import DataError

from ..imagefolder import load_imagefolder
from ..layout import RawSplits
from .generate import FORMAT

if TYPE_CHECKING:  # annotations only: pand.config.schema imports this package
    from pand.config.schema import DataCfg

__all__ = ["LAYOUT", "load_synthetic", "WebSample", "load_web_pool"]

LAYOUT = ("<root>/{train/, test/, optional val/, classes.json, captions.json} written by "
          "'python -m pand.data.synthetic <root>' (or data.root=null to generate it in cache_dir)")


def load_synthetic(root: Path, cfg: DataCfg) -> RawSplits:
    """Read a written synthetic benchmark as an ImageFolder, with names from classes.json and captions."""
    if not (root / "classes.json").is_file():
        raise DataError(
            f"synthetic: {root} has no classes.json, so it is not a synthetic benchmark folder. Write one with "
            f"'python -m pand.data.synthetic {root}', or set data.root=null to generate it under cache_dir."
        )
    raw = load_imagefolder(root, cfg, dataset="synthetic")
    meta = json.loads((root / "classes.json").read_text(encoding="utf-8"))
    dirs = [k.get("dir") for k in meta.get("classes", [])]
    found = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    if meta.get("format") != FORMAT or dirs != found:
        raise DataError(f"synthetic: {root / 'classes.json'} does not describe the class folders of {root / 'train'}; "
                        f"regenerate the benchmark")
    captions_path = root / "captions.json"
    if captions_path.is_file():
        rel = json.loads(captions_path.read_text(encoding="utf-8"))
        raw.captions = {str(root / k): v for k, v in rel.items()}
    return raw


@dataclass(frozen=True)
class WebSample:
    """One captioned web-pool image: absolute ``path``, class ``label``, ``caption`` and the ``mentions`` it makes."""

    path: str
    label: int
    caption: str
    mentions: Dict[str, Any]


def load_web_pool(root: str | os.PathLike) -> List[WebSample]:
    """The web pool of a written benchmark (``web.json``), or a :class:`DataError` naming the setting to enable."""
    path = Path(root) / "web.json"
    if not path.is_file():
        raise DataError(f"synthetic: {root} has no web pool (web.json); generate it with data.synthetic.web_per_class > 0")
    return [WebSample(str(Path(root) / r["path"]), int(r["label"]), r["caption"], dict(r["mentions"]))
            for r in json.loads(path.read_text(encoding="utf-8"))]
