"""What a local teacher checkpoint is, read from the file without running it (:func:`inspect_checkpoint`).

Every OpenAI CLIP model was trained with QuickGELU (``x * sigmoid(1.702 x)``); open_clip's ``openai`` tag turns it
on (``quick_gelu: True`` in the tag's config), but a local file is loaded into ``teacher.arch`` as configured, and
open_clip's built-in configs without ``-quickgelu`` use GELU. A GELU model running QuickGELU weights is silently
wrong, so :func:`pand.models.teacher.create_teacher` asks this module what the file is:

* ``torchscript``: a TorchScript archive (OpenAI's original ``ViT-B-16.pt``: a zip holding ``<root>/code/...`` and
  ``<root>/constants.pkl``). Refused (:func:`torchscript_error`): pand never runs pickled code.
* ``openai``: an OpenAI-format state dict (the ``clip`` package's ``model.state_dict()``): the open_clip weight names
  plus the non-weight entries ``input_resolution``, ``context_length`` and ``vocab_size`` (:data:`OPENAI_KEYS`),
  possibly under ``state_dict`` and/or with a ``module.`` prefix. Built with QuickGELU, loaded without those three
  entries (:func:`load_openai_checkpoint`).
* ``quickgelu_hub``: an open_clip file whose path holds the Hugging Face repo of a QuickGELU tag of the arch
  (``timm/vit_base_patch16_clip_224.openai`` or, in the HF cache, ``models--timm--vit_base_patch16_clip_224.openai``):
  built with QuickGELU.
* ``open_clip``: anything else, loaded as configured.

**Limit:** an open_clip-format file of OpenAI weights that was renamed and moved out of its Hugging Face folder
carries nothing that says QuickGELU; it is loaded as configured. Use the ``<arch>-quickgelu`` architecture for
OpenAI weights (``teacher.arch=ViT-B-16-quickgelu``).

Nothing here unpickles: keys are read with safetensors' ``safe_open`` or ``torch.load(weights_only=True, mmap=True)``,
and a TorchScript archive is recognised from its zip listing alone.
"""
from __future__ import annotations

import dataclasses
import logging
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import open_clip
import torch
from open_clip.pretrained import get_pretrained_cfg, list_pretrained_tags_by_model
from torch import nn

from pand.errors import PandError

__all__ = [
    "OPENAI_KEYS", "CheckpointInfo", "offline_arch", "is_torchscript_archive", "checkpoint_keys",
    "is_openai_state_dict", "quickgelu_hub_tag", "arch_uses_quick_gelu", "inspect_checkpoint", "torchscript_error",
    "load_openai_checkpoint", "load_state_dict_into", "build_with_local_weights",
]

#: the non-weight entries of an OpenAI-format CLIP state dict (``clip.model.CLIP`` registers them as buffers)
OPENAI_KEYS = ("input_resolution", "context_length", "vocab_size")


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
    """What :func:`inspect_checkpoint` found.

    Attributes:
        kind: ``torchscript`` | ``openai`` | ``quickgelu_hub`` | ``open_clip`` (module docstring).
        force_quick_gelu: build the model with QuickGELU although ``arch``'s config does not say so.
        tag: for ``quickgelu_hub``, the open_clip tag whose Hugging Face repo the path names.
        repo: that repo id (``org/name``).
    """

    kind: str
    force_quick_gelu: bool = False
    tag: Optional[str] = None
    repo: Optional[str] = None


def is_torchscript_archive(path: str | Path) -> bool:
    """Whether ``path`` is a TorchScript archive: a zip with ``<root>/constants.pkl`` and ``<root>/code/...``.

    Only the zip's listing is read (a ``torch.save`` zip has ``<root>/data.pkl`` but neither of those).
    """
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        parts = [n.split("/") for n in z.namelist()]
    return any(len(p) == 2 and p[1] == "constants.pkl" for p in parts) and \
        any(len(p) > 2 and p[1] == "code" for p in parts)


def _strip_module(keys: Sequence[str]) -> List[str]:
    return [k[len("module."):] if k.startswith("module.") else k for k in keys]


def checkpoint_keys(path: str | Path) -> List[str]:
    """The state-dict keys of a checkpoint, ``module.`` prefixes removed, without reading its tensors.

    ``.safetensors``: the header (``safe_open(...).keys()``); any other file (open_clip's own rule, by suffix):
    ``torch.load(weights_only=True, mmap=True)`` (tensors stay on disk; files in the legacy non-zip format are
    read without ``mmap``), the dict under ``state_dict`` when there is one. A file that is no dict gives ``[]``.

    Raises:
        whatever safetensors / torch raise for an unreadable file (the caller turns it into a PandError).
    """
    path = str(path)
    if path.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(path, framework="pt", device="cpu") as f:
            return _strip_module(list(f.keys()))
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as e:
        if "mmap" not in str(e):
            raise
        obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    return _strip_module([str(k) for k in obj]) if isinstance(obj, dict) else []


def is_openai_state_dict(keys: Sequence[str]) -> bool:
    """Whether ``keys`` (from :func:`checkpoint_keys`) are an OpenAI-format state dict: all of :data:`OPENAI_KEYS`."""
    present = set(keys)
    return all(k in present for k in OPENAI_KEYS)


def _hub_repo(hf_hub: str) -> Optional[Tuple[str, str]]:
    """``"org/name/"`` (open_clip's ``hf_hub`` field, possibly with a sub-folder) -> ``("org", "name")``."""
    parts = [p for p in str(hf_hub).split("/") if p]
    return (parts[0], parts[1]) if len(parts) >= 2 else None


def quickgelu_hub_tag(path: str | Path, arch: str) -> Optional[Tuple[str, str]]:
    """The QuickGELU tag of ``arch`` whose Hugging Face repo ``path`` lies in, as ``(tag, "org/name")``, else None.

    A tag counts when its pretrained config (``open_clip.pretrained.get_pretrained_cfg``) has ``quick_gelu: True``
    and an ``hf_hub`` repo ``org/name``; the path matches when two consecutive folders are ``org``, ``name`` or one
    folder is ``models--org--name`` (the Hugging Face cache's layout). Whole folder names are compared, so
    ``.../timm/vit_base_patch16_clip_224.openai_ft/...`` does not match the ``openai`` repo.
    """
    parts = Path(path).expanduser().absolute().parts
    for tag in list_pretrained_tags_by_model(arch):
        cfg = get_pretrained_cfg(arch, tag)
        repo = _hub_repo(cfg.get("hf_hub", "")) if cfg.get("quick_gelu") else None
        if repo is None:
            continue
        org, name = repo
        cache_folder = f"models--{org}--{name}"
        if cache_folder in parts or any(parts[i:i + 2] == (org, name) for i in range(len(parts) - 1)):
            return tag, f"{org}/{name}"
    return None


def offline_arch(arch: str, tag_info: Dict[str, Any]) -> str:
    """The ``teacher.arch`` that loads the tag's weights from a local file (``tag_info``: open_clip's config of the
    pretrained tag, ``get_pretrained_cfg``).

    A tag such as ``openai`` builds its model with QuickGELU (``quick_gelu`` in the tag's config; open_clip forces it
    for the tag), but a local file is loaded into ``arch`` as configured: for such a tag that is the
    ``<arch>-quickgelu`` variant, else a GELU model would run QuickGELU weights, silently wrong.
    """
    if tag_info.get("quick_gelu") and not arch.lower().endswith("-quickgelu"):
        variant = f"{arch}-quickgelu"
        if open_clip.get_model_config(variant) is not None:
            return variant
    return arch


def arch_uses_quick_gelu(arch: str) -> bool:
    """Whether open_clip builds ``arch`` with QuickGELU from its config alone (``quick_gelu`` in the model config)."""
    return bool((open_clip.get_model_config(arch) or {}).get("quick_gelu", False))


def inspect_checkpoint(path: str | Path, arch: str) -> CheckpointInfo:
    """What the local checkpoint ``path`` is, for ``teacher.arch=arch`` (the kinds: module docstring).

    Order: TorchScript archive (zip listing), OpenAI-format keys (:func:`is_openai_state_dict`), Hugging Face repo
    of a QuickGELU tag in the path (:func:`quickgelu_hub_tag`), else plain open_clip. ``force_quick_gelu`` is set for
    ``openai`` and ``quickgelu_hub`` unless ``arch`` is already a QuickGELU architecture.

    Raises:
        whatever reading the keys raises for an unreadable file (see :func:`checkpoint_keys`).
    """
    if is_torchscript_archive(path):
        return CheckpointInfo("torchscript")
    force = not arch_uses_quick_gelu(arch)
    if is_openai_state_dict(checkpoint_keys(path)):
        return CheckpointInfo("openai", force_quick_gelu=force)
    hub = quickgelu_hub_tag(path, arch)
    if hub is not None:
        return CheckpointInfo("quickgelu_hub", force_quick_gelu=force, tag=hub[0], repo=hub[1])
    return CheckpointInfo("open_clip")


def torchscript_error(path: str | Path, arch: str, key: str = "teacher.pretrained",
                      arch_key: str = "teacher.arch") -> PandError:
    """The refusal of a TorchScript archive, with the two ways to get the same weights safely (``key`` and
    ``arch_key`` name the settings: the teacher's, or PromptKD's student's)."""
    local = offline_arch(arch, {"quick_gelu": True})
    return PandError(
        f"{key}={path} is a TorchScript archive (such as OpenAI's original ViT-B-16.pt): it holds "
        f"pickled code, which pand never loads (weights only: safetensors or torch files readable with "
        f"weights_only=True). Use the open_clip tag instead ({key}=openai, which open_clip builds with "
        f"QuickGELU), or offline download that tag's open_clip_model.safetensors from its Hugging Face repo and set "
        f"{key}=/path/to/open_clip_model.safetensors {arch_key}={local}."
    )


def load_state_dict_into(model: nn.Module, state_dict: Dict[str, torch.Tensor]) -> None:
    """Load ``state_dict`` into an open_clip ``model`` strictly, with open_clip's own conversions.

    The steps of ``open_clip.factory.load_checkpoint`` after it has read the file (third-party formats, old text
    tower names, scalar vs 1-d ``logit_scale``/``logit_bias``, a missing ``logit_bias``, stale ``position_ids``,
    positional embeddings resized to ``teacher.image_size``), for a state dict that is already in memory.
    """
    from open_clip.factory import (
        convert_state_dict, convert_to_custom_text_state_dict, resize_pos_embed, resize_text_pos_embed,
    )

    sd = convert_state_dict(model, dict(state_dict))
    if "positional_embedding" in sd and not hasattr(model, "positional_embedding"):
        sd = convert_to_custom_text_state_dict(sd)
    for name in ("logit_scale", "logit_bias"):
        current = getattr(model, name, None)
        if name in sd and isinstance(current, torch.Tensor) and current.ndim != sd[name].ndim:
            sd[name] = sd[name].reshape(current.shape)
    if "logit_bias" not in sd and getattr(model, "logit_bias", None) is not None:
        sd["logit_bias"] = torch.zeros_like(sd["logit_scale"])
    position_id_key = "text.transformer.embeddings.position_ids"
    if position_id_key in sd and not hasattr(model, position_id_key):
        del sd[position_id_key]
    resize_pos_embed(sd, model)
    resize_text_pos_embed(sd, model)
    model.load_state_dict(sd, strict=True)


def load_openai_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Load an OpenAI-format state dict file into ``model`` (built with QuickGELU): :data:`OPENAI_KEYS` dropped,
    ``state_dict``/``module.`` unwrapped (open_clip's ``load_state_dict``, ``weights_only=True``), strict load."""
    from open_clip.factory import load_state_dict

    raw = load_state_dict(str(path), device="cpu", weights_only=True)
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in raw.items()}
    for k in OPENAI_KEYS:
        sd.pop(k, None)
    load_state_dict_into(model, sd)


def build_with_local_weights(arch: str, path: str | Path, create: Callable[..., Any], key: str = "teacher.pretrained",
                             arch_key: str = "teacher.arch", log: Optional[logging.Logger] = None
                             ) -> Tuple[Any, bool]:
    """Build ``arch`` with the weights of the local file ``path``, the one way for the teacher and PromptKD's student.

    :func:`inspect_checkpoint` says what the file is: a TorchScript archive is refused unread
    (:func:`torchscript_error`); an OpenAI-format state dict and a file from a QuickGELU tag's Hugging Face repo are
    built with QuickGELU (logged: INFO for the first, WARNING for the second, a guess from the path); anything else
    goes through open_clip's own file loading.

    Args:
        create: ``create(pretrained=..., force_quick_gelu=...)`` builds the model (e.g. a ``functools.partial`` of
            ``open_clip.create_model_and_transforms`` with the caller's other arguments); whatever it returns is
            returned, its first element (or itself) being the model.
        key, arch_key: the settings named in messages.

    Returns:
        ``(built, force_quick_gelu)``: what ``create`` returned, and whether QuickGELU was forced.
    """
    log = log or logging.getLogger("pand.train.teacher")
    info = inspect_checkpoint(path, arch)
    if info.kind == "torchscript":
        raise torchscript_error(path, arch, key, arch_key)
    force = bool(info.force_quick_gelu)
    if force:
        variant = offline_arch(arch, {"quick_gelu": True})
        explicit = f" ({arch_key}={variant} says so explicitly)" if variant != arch else ""
        if info.kind == "openai":
            log.info(f"{key}: {path} is an OpenAI-format CLIP state dict (it has {', '.join(OPENAI_KEYS)}): OpenAI "
                     f"weights need QuickGELU, so {arch} is built with QuickGELU{explicit}")
        else:
            log.warning(f"{key}: {path} lies in the Hugging Face repo {info.repo} of the open_clip tag '{info.tag}', "
                        f"whose weights need QuickGELU: {arch} is built with QuickGELU{explicit}")
    if info.kind == "openai":
        built = create(pretrained=None, force_quick_gelu=force)
        load_openai_checkpoint(built[0] if isinstance(built, tuple) else built, path)
        return built, force
    return create(pretrained=str(path), force_quick_gelu=force), force
