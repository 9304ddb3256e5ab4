"""The frozen open_clip teacher (:func:`create_teacher`).

Any open_clip model is a teacher: ``teacher.arch`` names the architecture (a built-in open_clip config or
one of the tiny configs shipped in ``pand/models/model_configs/``, registered with
``open_clip.add_model_config`` when this module is imported) and ``teacher.pretrained`` the weights:

* an open_clip pretrained tag (``laion2b_s34b_b82k_augreg_soup``, ``openai``...): the real
  ``open_clip.create_model_and_transforms`` call, which downloads the weights when online;
* a local checkpoint file (``.safetensors``, ``.bin``, ``.pt``; read with ``weights_only=True``), checked first by
  :mod:`pand.models.teacher_checkpoint`: a TorchScript archive is refused; an OpenAI-format state dict, or a file in
  the Hugging Face repo of a QuickGELU tag, is built with QuickGELU (OpenAI's weights need it). An open_clip file of
  OpenAI weights renamed and moved elsewhere cannot be recognised: use ``teacher.arch=<arch>-quickgelu`` for it;
* ``null``: random initialisation, seeded by ``teacher.seed`` (tests and the offline demo).

The teacher is frozen (``requires_grad_(False)``), in eval mode, and stays in eval mode: :meth:`Teacher.train`
is a no-op for the wrapped model, as in open_clip's ``DistillCLIPTask``.

``Teacher.identity`` is ``"arch|pretrained|<sha256[:16]>"``, the hash being that of the weights file or, for
random init, of the state dict; ``arch`` is ``<arch>-quickgelu`` when the model runs QuickGELU that its config does
not name (:func:`identity_arch`). Caches and artifacts are keyed on it, so another teacher never reuses them.

The AMP path (``teacher.precision=amp``) is only taken on CUDA; tests/nsd/test_nsd_cuda.py covers it (skipped
without a CUDA GPU). Downloading a real tag needs the network; the tests use random and local-file teachers.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import open_clip
import torch
from open_clip.pretrained import download_pretrained, get_pretrained_cfg, list_pretrained_tags_by_model
from torch import nn

from pand.config.schema import TeacherCfg
from pand.errors import ConfigError, PandError
from pand.models.teacher_checkpoint import arch_uses_quick_gelu, build_with_local_weights, offline_arch
from pand.models.clip_preprocess import open_clip_preprocess_spec
from pand.utils.io import sha256_file

__all__ = [
    "MODEL_CONFIG_DIR", "TINY_TEACHERS", "Teacher", "create_teacher", "identity_arch", "register_model_configs",
    "state_dict_sha256",
    "same_teacher", "split_identity", "teacher_summary",
]

MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
TINY_TEACHERS = ("pand-tiny-vit", "pand-tiny-vit-s", "pand-demo-rn")
_REGISTERED = False
_FILE_HASHES: Dict[Tuple[str, int, int], str] = {}
_log = logging.getLogger("pand.train.teacher")  # a child of pand.report's logger: printed by pand-train


def register_model_configs() -> None:
    """Register pand's open_clip model configs (``pand/models/model_configs/*.json``) once per process."""
    global _REGISTERED
    if _REGISTERED:
        return
    if MODEL_CONFIG_DIR.is_dir():
        open_clip.add_model_config(MODEL_CONFIG_DIR)
    _REGISTERED = True


register_model_configs()


def _file_sha256(path: str) -> str:
    """sha256 of a file, memoised per process on (path, size, mtime) - teacher checkpoints can be GBs."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if key not in _FILE_HASHES:
        _FILE_HASHES[key] = sha256_file(path)
    return _FILE_HASHES[key]


def state_dict_sha256(module: nn.Module) -> str:
    """sha256 over the (sorted) names, dtypes, shapes and bytes of a module's state dict."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def split_identity(identity: str) -> Tuple[str, str, str]:
    """``"arch|pretrained|hash"`` -> ``(arch, pretrained, hash)``; the pretrained part may itself hold ``|``."""
    parts = str(identity).split("|")
    if len(parts) < 3:
        return str(identity), "", ""
    return parts[0], "|".join(parts[1:-1]), parts[-1]


def same_teacher(a: str, b: str) -> bool:
    """Whether two identities name the same weights: same arch and same weights hash.

    The ``pretrained`` spelling is ignored, so a tag and a local copy of the same file match.
    """
    arch_a, _, hash_a = split_identity(a)
    arch_b, _, hash_b = split_identity(b)
    if not hash_a or not hash_b:
        return str(a) == str(b)
    return arch_a == arch_b and hash_a == hash_b


class Teacher(nn.Module):
    """A frozen open_clip model with its tokenizer and eval preprocessing.

    Attributes:
        model: the open_clip model (``CLIP`` / ``CustomTextCLIP``), frozen and in eval mode.
        tokenizer: open_clip tokenizer of the architecture (``tokenizer(list[str]) -> LongTensor [N, L]``).
        arch: open_clip architecture name.
        pretrained: the tag, the local checkpoint path, or None (random init).
        identity: ``"arch|pretrained|<sha256[:16]>"`` of the weights.
        embed_dim: joint embedding dim D_t.
        preprocess_spec: the eval preprocessing as a :class:`~pand_runtime.preprocess_spec.PreprocessSpec`, read
            from the open_clip model's own preprocess config
            (:func:`pand.models.clip_preprocess.open_clip_preprocess_spec`): input size, mean/std, interpolation,
            resize mode. Every consumer builds its transform from it
            (``pand.data.transforms.create_transform(teacher.preprocess_spec, is_train=False)``).
        image_size: ``preprocess_spec.image_size``, the square input size ``S``.
        preprocess: open_clip's own eval transform (PIL image -> normalised tensor ``[3, S, S]``): the reference that
            the spec's transform reproduces pixel for pixel; Stage PSC's feature cache is keyed on its description.
        logit_scale: ``exp`` of the learned CLIP logit scale (a float, ~100 for trained models).
        precision: ``fp32`` or ``amp`` (autocast, CUDA only).
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        preprocess: Any,
        arch: str,
        pretrained: Optional[str],
        identity: str,
        precision: str = "fp32",
    ):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.arch = arch
        self.pretrained = pretrained
        self.identity = identity
        self.precision = precision
        self.preprocess_spec = open_clip_preprocess_spec(model)
        self.image_size = self.preprocess_spec.image_size
        self.embed_dim = _embed_dim(model)
        self.logit_scale = float(model.logit_scale.detach().float().exp().reshape(-1)[0])
        model.requires_grad_(False)
        model.eval()

    # -- mode / device -------------------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> "Teacher":
        """No-op for the wrapped model: the teacher always stays in eval mode."""
        self.training = False
        self.model.eval()
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def amp_dtype(self) -> Optional[torch.dtype]:
        """The autocast dtype used by the encoders: bf16/fp16 for ``precision=amp`` on CUDA, else None (fp32)."""
        if self.precision == "amp" and self.device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return None

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast context for ``precision=amp`` on CUDA (bf16 where supported, else fp16); else a no-op."""
        dtype = self.amp_dtype
        return torch.autocast("cuda", dtype=dtype) if dtype is not None else contextlib.nullcontext()

    # -- encoders ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings.

        Args:
            x: ``[B, 3, H, W]`` images normalised with this teacher's ``mean``/``std`` (any device).

        Returns:
            ``[B, D_t]`` float32 on the teacher's device, ``f / ||f||``. No gradient.
        """
        if self.model.training:  # someone called model.train() directly
            self.model.eval()
        x = x.to(self.device, non_blocking=True)
        with self.autocast():
            f = self.model.encode_image(x)
        return torch.nn.functional.normalize(f.float(), dim=-1)

    @torch.no_grad()
    def encode_text(self, prompts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """L2-normalised text embeddings of ``prompts`` (tokenised with :attr:`tokenizer`): ``[C, D_t]`` float32."""
        if isinstance(prompts, str):
            raise PandError("encode_text expects a list of prompts, got a single string; wrap it in a list")
        out = []
        for i in range(0, len(prompts), batch_size):
            tokens = self.tokenizer(list(prompts[i:i + batch_size])).to(self.device)
            with self.autocast():
                f = self.model.encode_text(tokens)
            out.append(torch.nn.functional.normalize(f.float(), dim=-1))
        if not out:
            return torch.empty(0, self.embed_dim, device=self.device)
        return torch.cat(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - alias
        return self.encode_image(x)

    def extra_repr(self) -> str:
        return f"identity={self.identity!r}, embed_dim={self.embed_dim}, image_size={self.image_size}"


def _embed_dim(model: nn.Module) -> int:
    """D_t: the text projection's output dim, else the visual output dim, else logit from a dummy pass."""
    proj = getattr(model, "text_projection", None)
    if isinstance(proj, nn.Linear):
        return int(proj.out_features)
    if isinstance(proj, torch.Tensor):
        return int(proj.shape[1])
    visual = getattr(model, "visual", None)
    for attr in ("output_dim", "embed_dim"):
        if visual is not None and isinstance(getattr(visual, attr, None), int):
            return int(getattr(visual, attr))
    text = getattr(model, "text", None)
    if text is not None and isinstance(getattr(text, "output_dim", None), int):
        return int(text.output_dim)
    raise PandError(f"cannot determine the embedding dim of {type(model).__name__}")


def _tag_failure(arch: str, tag: str, err: Exception, tag_info: Optional[Dict[str, Any]] = None) -> PandError:
    local = offline_arch(arch, tag_info or {})
    keep = (f"keep teacher.arch={arch}" if local == arch else
            f"and set teacher.arch={local}: these weights were trained with QuickGELU, which the tag turns on but a "
            f"local file does not")
    return PandError(
        f"could not fetch open_clip weights '{arch}' / '{tag}' ({type(err).__name__}: {err}). Offline? Download the "
        f"checkpoint elsewhere (e.g. open_clip_pytorch_model.bin or open_clip_model.safetensors from the tag's Hugging "
        f"Face repo) and set teacher.pretrained=/path/to/that/file ({keep})."
    )


def identity_arch(arch: str, quick_gelu: bool) -> str:
    """The architecture as :attr:`Teacher.identity` names it: ``<arch>-quickgelu`` when the model runs QuickGELU but
    ``arch``'s own config does not say so (a QuickGELU tag, or QuickGELU set for a local file), else ``arch``.

    So caches keyed on the identity never mix a GELU and a QuickGELU model of the same weights, and ``ViT-B-16`` with
    QuickGELU forced names the same teacher as ``ViT-B-16-quickgelu`` with the same file.
    """
    if quick_gelu and not arch_uses_quick_gelu(arch) and not arch.lower().endswith("-quickgelu"):
        return f"{arch}-quickgelu"
    return arch


def _as_teacher_cfg(teacher_cfg: Union[TeacherCfg, Dict[str, Any]]) -> TeacherCfg:
    """``teacher_cfg`` itself (a :class:`TeacherCfg` or its OmegaConf node), or a plain dict as a :class:`TeacherCfg`
    (the keys it leaves out take the schema's defaults)."""
    if not isinstance(teacher_cfg, dict):
        return teacher_cfg
    unknown = sorted(set(teacher_cfg) - {f.name for f in dataclasses.fields(TeacherCfg)})
    if unknown:
        raise ConfigError(f"unknown teacher key(s) {unknown}; valid keys: "
                          f"{', '.join(f.name for f in dataclasses.fields(TeacherCfg))}")
    return TeacherCfg(**teacher_cfg)


def create_teacher(teacher_cfg: Union[TeacherCfg, Dict[str, Any]], device: str | torch.device = "cpu") -> Teacher:
    """Build the frozen teacher of ``teacher_cfg`` (:class:`pand.config.schema.TeacherCfg`).

    Args:
        teacher_cfg: the ``teacher`` section: ``arch``, ``pretrained`` (tag | local file | None), ``image_size``
            (force another input size), ``precision`` (fp32 | amp) and ``seed`` (random-init seed). A
            :class:`TeacherCfg`, its OmegaConf node, or a dict of some of its fields.
        device: where the model lives.

    Returns:
        A :class:`Teacher` in eval mode with every parameter frozen.

    A local file (:mod:`pand.models.teacher_checkpoint`): a TorchScript archive (OpenAI's original ``ViT-B-16.pt``)
    is refused without being loaded; an OpenAI-format state dict (it holds ``input_resolution``, ``context_length``,
    ``vocab_size``) is built with QuickGELU and loaded without those entries (one INFO line); an open_clip file whose
    path holds the Hugging Face repo of a QuickGELU tag of ``arch`` (``.../models--timm--vit_base_patch16_clip_224.
    openai/...``) is built with QuickGELU (one WARNING line naming the tag). **Limit:** an open_clip-format file of
    OpenAI weights that was renamed and moved elsewhere carries nothing that says QuickGELU and is loaded into
    ``arch`` as configured: for OpenAI weights use the ``<arch>-quickgelu`` architecture (``ViT-B-16-quickgelu``).

    Raises:
        ConfigError: a dict with a key that is not a ``teacher`` field.
        PandError: unknown architecture (lists pand's tiny ones), unknown tag/missing file, a tag whose download
            failed (says how to point ``teacher.pretrained`` at a local file), a TorchScript archive (says how to
            get the same weights as a state dict), or a file that does not load into ``arch``.
    """
    register_model_configs()
    cfg = _as_teacher_cfg(teacher_cfg)
    arch = str(cfg.arch)
    pretrained = str(cfg.pretrained) if cfg.pretrained not in (None, "", "null") else None
    image_size = cfg.image_size
    precision = str(cfg.precision)
    seed = int(cfg.seed)
    if precision not in ("fp32", "amp"):
        raise PandError(f"teacher.precision must be fp32 or amp, got {precision!r}")

    if open_clip.get_model_config(arch) is None:
        raise PandError(
            f"unknown open_clip architecture teacher.arch={arch!r}. pand ships {', '.join(TINY_TEACHERS)}; "
            f"open_clip has e.g. ViT-B-16, ViT-L-14, convnext_xxlarge (open_clip.list_models() lists all)."
        )

    kwargs: Dict[str, Any] = dict(device=device, force_image_size=int(image_size) if image_size else None)
    weights_file: Optional[str] = None
    tag_cfg = get_pretrained_cfg(arch, pretrained) if pretrained else {}
    if pretrained and not tag_cfg:
        p = Path(pretrained).expanduser()
        if not p.is_file():
            tags = list_pretrained_tags_by_model(arch)
            raise PandError(
                f"teacher.pretrained={pretrained!r} is neither an open_clip tag of {arch} nor an existing file. "
                f"Known tags: {', '.join(tags) if tags else '(none)'}. Point it at a local checkpoint or set null."
            )
        weights_file = str(p)

    forced = False  # QuickGELU set although arch's config does not name it (a QuickGELU tag, or a recognised file)
    try:
        if tag_cfg:
            forced = bool(tag_cfg.get("quick_gelu", False))
            model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=pretrained,
                                                                          force_quick_gelu=forced, **kwargs)
            try:
                weights_file = download_pretrained(tag_cfg)  # already cached by the call above
            except Exception as e:  # noqa: BLE001
                raise _tag_failure(arch, pretrained, e, tag_cfg) from e
        elif weights_file:
            create = functools.partial(open_clip.create_model_and_transforms, arch, **kwargs)
            (model, _, preprocess), forced = build_with_local_weights(arch, weights_file, create, log=_log)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=None, **kwargs)
    except PandError:
        raise
    except Exception as e:  # noqa: BLE001 - open_clip raises RuntimeError for download / load problems
        if tag_cfg:
            raise _tag_failure(arch, pretrained, e, tag_cfg) from e
        if weights_file:
            raise PandError(
                f"cannot load teacher checkpoint {weights_file} into {arch} ({type(e).__name__}: {e}). It must be an "
                f"open_clip state dict (safetensors, or a torch file readable with weights_only=True) of that arch."
            ) from e
        raise

    model.requires_grad_(False)
    model.eval()
    digest = _file_sha256(weights_file) if weights_file else state_dict_sha256(model)
    quick_gelu = forced or arch_uses_quick_gelu(arch)
    identity = f"{identity_arch(arch, quick_gelu)}|{pretrained if pretrained else f'random-seed{seed}'}|{digest[:16]}"
    tokenizer = open_clip.get_tokenizer(arch)
    return Teacher(model, tokenizer, preprocess, arch, pretrained, identity, precision=precision)


def teacher_summary(teacher: Teacher) -> Dict[str, Any]:
    """JSON-able description of a teacher (identity, dims, preprocessing) for metadata."""
    return {
        "identity": teacher.identity,
        "arch": teacher.arch,
        "pretrained": teacher.pretrained,
        "embed_dim": teacher.embed_dim,
        "image_size": teacher.preprocess_spec.image_size,
        "mean": list(teacher.preprocess_spec.mean),
        "std": list(teacher.preprocess_spec.std),
        "interpolation": teacher.preprocess_spec.interpolation,
        "logit_scale": teacher.logit_scale,
    }
