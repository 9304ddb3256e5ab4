"""Which Stage PSC settings decide the learned anchors, and the hash that identifies an artifact."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Dict, Mapping

from pand.utils.io import sha256_bytes

if TYPE_CHECKING:  # annotations only: pand.config.schema imports pand.data and pand.engine
    from pand.config.schema import PSCCfg

__all__ = ["PSC_SETTINGS", "psc_settings", "psc_config_hash"]

# psc fields that change the learned anchors (artifact/enabled do not)
PSC_SETTINGS = ("n_ctx", "ctx_init", "csc", "class_token_position", "prompt_form", "optimizer", "lr", "momentum",
                "weight_decay", "epochs", "batch_size", "warmup_epochs", "patience", "grad_clip")


def psc_settings(psc_cfg: PSCCfg) -> Dict[str, Any]:
    """``{name: value}`` of the :data:`PSC_SETTINGS` of the typed ``psc`` section (:class:`pand.config.schema.PSCCfg`)."""
    return {k: getattr(psc_cfg, k) for k in PSC_SETTINGS}


def psc_config_hash(psc_cfg: PSCCfg, parts: Mapping[str, Any]) -> str:
    """sha256 of the PSC settings that change the anchors plus ``parts`` (teacher, classes, template, data, seed)."""
    blob = json.dumps({"psc": psc_settings(psc_cfg), **{str(k): v for k, v in parts.items()}}, sort_keys=True,
                      default=str)
    return sha256_bytes(blob.encode("utf-8"))
