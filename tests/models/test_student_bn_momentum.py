"""student.bn_momentum: every BatchNorm layer of the student gets it; null keeps the architecture's own."""
import pytest
import torch
from torch import nn

from pand.config import ConfigError, load_config
from pand.models.students import create_student, set_bn_momentum


def _momenta(model: nn.Module):
    return {m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)}


def test_null_keeps_the_architectures_own_and_a_value_reaches_every_layer():
    assert _momenta(create_student("mobilenet_v3_small", 5)) == {0.01}  # torchvision's TensorFlow-style default
    assert _momenta(create_student("resnet18", 5)) == {0.1}
    s = create_student("mobilenet_v3_small", 5, bn_momentum=0.1)
    assert _momenta(s) == {0.1}
    assert set_bn_momentum(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.BatchNorm1d(4)), 0.3) == 2


def test_the_momentum_is_what_training_updates_the_running_mean_with():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(2)
    set_bn_momentum(bn, 0.25)
    x = torch.randn(8, 2, 3, 3) + 4.0
    bn.train()
    bn(x)
    torch.testing.assert_close(bn.running_mean, 0.25 * x.mean(dim=(0, 2, 3)))


def test_the_config_passes_it_to_the_student_and_refuses_values_outside_0_1(tmp_path):
    from pand.nsd.build import build_models

    cfg = load_config("configs/tiny.yaml", ["student.arch=mobilenet_v3_small", "student.bn_momentum=0.1"])
    model = build_models(cfg.student, cfg.recipe, 4, None if not cfg.recipe.use_teacher else 8, torch.device("cpu"))
    assert _momenta(model) == {0.1}
    assert load_config("configs/tiny.yaml", []).student.bn_momentum is None
    for bad in ("0", "1.5", "-0.1"):
        with pytest.raises(ConfigError, match="student.bn_momentum"):
            load_config("configs/tiny.yaml", [f"student.bn_momentum={bad}"])
