"""Student registry and factory (timm-style ``register_student`` / ``create_student`` / ``list_students``).

Every student is a :class:`Student`: a backbone that returns pooled, *unnormalised* penultimate
features ``g [B, D_s]`` (``forward_features``) and a linear head ``linear_cls`` giving class logits
``z = linear_cls(g) [B, C]`` (``forward``). ``embed_dim`` is ``D_s``. Only ``forward`` is exported
(the alignment heads live elsewhere and are dropped at export).

Backbones: torchvision resnet18/34/50, mobilenet_v2, mobilenet_v3_small/large, efficientnet_b0, and
any timm model as ``timm/<name>`` when timm is installed. ImageNet weights come from torchvision's
weights API (downloads when online) or from a local file (``weights=``).
"""
from __future__ import annotations

import os
import re
from typing import Callable, Dict, List, Optional, Tuple

import torch
from safetensors.torch import load_file
from torch import nn

from pand.engine.checkpoint import safe_torch_load
from pand.errors import ArtifactError, ConfigError, PandError

__all__ = ["Student", "register_student", "create_student", "list_students", "is_student", "min_input_size",
           "set_bn_momentum"]

_STUDENTS: Dict[str, Callable[..., Tuple[nn.Module, int]]] = {}


def _natural_key(s: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s)]


def register_student(fn: Callable[..., Tuple[nn.Module, int]]) -> Callable[..., Tuple[nn.Module, int]]:
    """Register ``fn(pretrained: bool) -> (backbone_without_head, feature_dim)`` under its name.

    A smallest usable input side (pixels) may be declared as ``fn.min_input_size`` (see :func:`min_input_size`)."""
    _STUDENTS[fn.__name__] = fn
    return fn


def min_input_size(name: str) -> Optional[int]:
    """The smallest square input side (pixels) student ``name`` accepts, or None when nothing is known.

    Read from, in order: the registered factory's ``min_input_size`` attribute; torchvision's weights metadata
    (``meta["min_size"]``, static, no download) for torchvision architectures; timm's pretrained config for
    ``timm/<name>`` (``input_size`` when the model's input size is fixed, else ``min_input_size``; None without timm).
    """
    if name.startswith("timm/"):
        try:
            import timm
        except ImportError:
            return None
        pcfg = timm.get_pretrained_cfg(name[5:])
        if pcfg is None:
            return None
        size = pcfg.input_size if getattr(pcfg, "fixed_input_size", False) else getattr(pcfg, "min_input_size", None)
        return int(max(size[-2:])) if size else None
    fn = _STUDENTS.get(name)
    if fn is not None and getattr(fn, "min_input_size", None) is not None:
        return int(fn.min_input_size)
    import torchvision

    try:
        meta = torchvision.models.get_model_weights(name).DEFAULT.meta
    except (ValueError, KeyError, AttributeError):
        return None
    size = meta.get("min_size")
    return int(max(size)) if size else None


def list_students(filter: str = "") -> List[str]:
    """Registered student names (natural sort), optionally containing ``filter``; timm names are ``timm/<name>``."""
    names = sorted((n for n in _STUDENTS if filter in n), key=_natural_key)
    return names


def is_student(name: str) -> bool:
    return name in _STUDENTS or name.startswith("timm/")


class Student(nn.Module):
    """Backbone + linear classifier. ``forward(x) -> logits``; ``forward_features(x) -> g``."""

    def __init__(self, backbone: nn.Module, embed_dim: int, num_classes: int, arch: str = ""):
        super().__init__()
        self.backbone = backbone
        self.embed_dim = int(embed_dim)
        self.num_classes = int(num_classes)
        self.arch = arch
        self.linear_cls = nn.Linear(self.embed_dim, self.num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled, unnormalised penultimate features ``[B, D_s]``."""
        return self.backbone(x)

    def forward_head(self, g: torch.Tensor) -> torch.Tensor:
        return self.linear_cls(g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_cls(self.backbone(x))


def _tv(name: str, weights_enum: str, pretrained: bool):
    import torchvision

    ctor = getattr(torchvision.models, name)
    weights = None
    if pretrained:
        weights = getattr(torchvision.models, weights_enum).DEFAULT
    try:
        return ctor(weights=weights)
    except Exception as e:  # download failure offline
        if pretrained:
            raise PandError(
                f"could not fetch torchvision ImageNet weights for '{name}' ({e}). Offline? Download the weights "
                f"elsewhere and pass student.weights=/path/to/file.pth with student.pretrained=false."
            ) from e
        raise


def _resnet(name: str, weights_enum: str) -> Callable[..., Tuple[nn.Module, int]]:
    """The factory of torchvision's ResNet ``name``: the backbone with ``fc`` replaced by identity."""

    def build(pretrained: bool = False):
        m = _tv(name, weights_enum, pretrained)
        d = m.fc.in_features
        m.fc = nn.Identity()
        return m, d

    build.__name__ = build.__qualname__ = name
    return build


for _name, _weights in (("resnet18", "ResNet18_Weights"), ("resnet34", "ResNet34_Weights"),
                        ("resnet50", "ResNet50_Weights")):
    register_student(_resnet(_name, _weights))


def _classifier_off(name: str, enum: str, pretrained: bool):
    """torchvision's ``name`` with its whole ``classifier`` (dropout + linear) replaced by identity: the pooled feature."""
    m = _tv(name, enum, pretrained)
    d = m.classifier[-1].in_features
    m.classifier = nn.Identity()
    return m, d


@register_student
def mobilenet_v2(pretrained: bool = False):
    return _classifier_off("mobilenet_v2", "MobileNet_V2_Weights", pretrained)


def _mnv3(name: str, enum: str, pretrained: bool):
    # classifier = Linear(576|960 -> 1024|1280), Hardswish, Dropout, Linear(-> 1000). Keep everything up to the
    # last Linear so the feature is the 1024/1280-d pre-logits (the reference's classifier[1] swap crashes).
    m = _tv(name, enum, pretrained)
    d = m.classifier[-1].in_features
    m.classifier[-1] = nn.Identity()
    return m, d


@register_student
def mobilenet_v3_small(pretrained: bool = False):
    return _mnv3("mobilenet_v3_small", "MobileNet_V3_Small_Weights", pretrained)


@register_student
def mobilenet_v3_large(pretrained: bool = False):
    return _mnv3("mobilenet_v3_large", "MobileNet_V3_Large_Weights", pretrained)


@register_student
def efficientnet_b0(pretrained: bool = False):
    return _classifier_off("efficientnet_b0", "EfficientNet_B0_Weights", pretrained)


def _timm_backbone(name: str, pretrained: bool):
    try:
        import timm
    except ImportError as e:
        raise PandError(f"student 'timm/{name}' needs timm: pip install timm") from e
    m = timm.create_model(name, pretrained=pretrained, num_classes=0)
    return m, int(m.num_features)


def _load_local_weights(backbone: nn.Module, path: str) -> None:
    if not os.path.isfile(path):
        raise ArtifactError(f"student.weights file not found: {path}. Fix the path or set student.weights=null")
    fix = ("Pass a safetensors file or a plain torch state_dict of tensors "
           "(student.weights=/path/to/weights.safetensors).")
    if path.endswith(".safetensors"):
        try:
            sd = load_file(path)
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
            raise ArtifactError(f"student.weights file {path} cannot be read ({type(e).__name__}): it is empty, "
                                f"truncated or not a safetensors file. {fix}") from None
    else:
        sd = safe_torch_load(path, "student.weights file", fix)
        if isinstance(sd, dict) and "state_dict" in sd:
            sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ArtifactError(f"student.weights file {path} holds no state_dict of tensors; pass the backbone's "
                            f"state_dict (safetensors or torch.save of a dict of tensors)")
    missing, unexpected = backbone.load_state_dict(sd, strict=False)
    # classifier weights of an ImageNet checkpoint are expected to be unused
    unexpected = [k for k in unexpected if not k.startswith(("fc.", "classifier.", "head."))]
    if unexpected or missing:
        raise ArtifactError(f"weights file {path} does not fit the backbone: missing={missing[:5]} unexpected={unexpected[:5]}")


def set_bn_momentum(module: nn.Module, momentum: float) -> int:
    """Set ``momentum`` on every BatchNorm layer of ``module`` (the running statistics' update
    ``r <- (1 - momentum) * r + momentum * batch_stat``); returns how many layers were changed."""
    layers = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in layers:
        m.momentum = float(momentum)
    return len(layers)


def create_student(
    name: str,
    num_classes: int,
    pretrained: bool = False,
    weights: Optional[str] = None,
    bn_momentum: Optional[float] = None,
) -> Student:
    """Build a student classifier.

    Args:
        name: a registered name (see :func:`list_students`) or ``timm/<model>``.
        num_classes: size of the linear head.
        pretrained: ImageNet weights through torchvision's weights API (needs network the first time).
        weights: local backbone weights (safetensors or a torch state dict, loaded with ``weights_only=True``).
        bn_momentum: the BatchNorm momentum of every BN layer (:func:`set_bn_momentum`); None keeps the
            architecture's own. Only training reads it (it changes how running statistics are updated).
    """
    if name.startswith("timm/"):
        backbone, dim = _timm_backbone(name[5:], pretrained)
    elif name in _STUDENTS:
        backbone, dim = _STUDENTS[name](pretrained=pretrained)
    else:
        raise ConfigError(f"Unknown student '{name}'. Available: {', '.join(list_students())}, or timm/<name> with timm installed")
    if weights:
        _load_local_weights(backbone, weights)
    if bn_momentum is not None:
        set_bn_momentum(backbone, bn_momentum)
    return Student(backbone, dim, num_classes, arch=name)
