"""Small fakes for the NSD engine tests: a tiny CNN student, a fake teacher, a toy dataset."""
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pand.config import config_dir, load_config
from pand.nsd.metrics import read_metrics
from pand.models.students import _STUDENTS, register_student
from pand_runtime.preprocess_spec import PreprocessSpec

STUDENT_MEAN = (0.5, 0.5, 0.5)
STUDENT_STD = (0.25, 0.25, 0.25)


def nsd_test_cnn(pretrained: bool = False):
    """conv-BN-ReLU x2 + pool + dropout: D_s = 16 (BN buffers and dropout RNG must survive a resume)."""
    m = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1, stride=2), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2),  # dropout: resume must restore the RNG
    )
    return m, 16


if "nsd_test_cnn" not in _STUDENTS:
    register_student(nsd_test_cnn)


class FakeTeacher:
    """``encode_image``: L2-normalised random projection of pooled pixels; records what it was fed."""

    def __init__(self, embed_dim=8, image_size=12, mean=(0.4, 0.45, 0.5), std=(0.2, 0.25, 0.3), seed=0):
        g = torch.Generator().manual_seed(seed)
        self.proj = torch.randn(3 * 4 * 4, embed_dim, generator=g)
        self.embed_dim, self.image_size = embed_dim, image_size
        self.preprocess_spec = PreprocessSpec(image_size, image_size, "bilinear", mean, std)
        self.precision = "fp32"  # as pand.models.teacher.Teacher has it
        self.identity = f"fake|seed{seed}|0"
        self.seen = []

    def encode_image(self, x):
        self.seen.append(x.detach().clone())
        f = F.adaptive_avg_pool2d(x, 4).flatten(1) @ self.proj
        return F.normalize(f, dim=-1)


class ToyDataset(torch.utils.data.Dataset):
    """Class c = a colour direction; images 3x12x12 in [0,1], normalised with the student's mean/std."""

    def __init__(self, n_per_class=8, num_classes=4, seed=0, augment=False):
        g = torch.Generator().manual_seed(seed)
        colours = torch.rand(num_classes, 3, 1, 1, generator=torch.Generator().manual_seed(123))
        self.items = []
        for c in range(num_classes):
            for _ in range(n_per_class):
                img = (colours[c] + 0.25 * torch.randn(3, 12, 12, generator=g)).clamp(0, 1)
                self.items.append((img, c))
        self.augment = augment
        self.mean = torch.tensor(STUDENT_MEAN).view(3, 1, 1)
        self.std = torch.tensor(STUDENT_STD).view(3, 1, 1)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        img, y = self.items[i]
        if self.augment:  # draws from the global RNGs, like torchvision transforms
            if torch.rand(1).item() < 0.5:
                img = img.flip(-1)
            img = (img + 0.05 * torch.randn_like(img)).clamp(0, 1)
        return (img - self.mean) / self.std, y


def make_splits(n_train=10, n_eval=4, num_classes=4):
    return SimpleNamespace(
        train=ToyDataset(n_train, num_classes, seed=1, augment=True),
        val=ToyDataset(n_eval, num_classes, seed=2),
        test=ToyDataset(n_eval, num_classes, seed=3),
        class_names=[f"class{c}" for c in range(num_classes)],
    )


def make_cfg(*overrides):
    base = [
        "student.arch=nsd_test_cnn", "student.image_size=12", f"student.mean={list(STUDENT_MEAN)}",
        f"student.std={list(STUDENT_STD)}", "nsd.epochs=3", "nsd.batch_size=8", "nsd.lr=0.01",
        "trainer.tensorboard=false", "trainer.num_workers=0", "trainer.log_every=1",
    ]
    return load_config(config_dir() / "tiny.yaml", [*base, *overrides])


def make_anchors(num_classes=4, dim=8, seed=5):
    return F.normalize(torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(seed)), dim=1)


def epoch_records(run_dir):
    """The per-epoch records of an NSD run directory's ``metrics.jsonl``."""
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "epoch"]


@pytest.fixture
def toy():
    return SimpleNamespace(make_cfg=make_cfg, make_splits=make_splits, make_anchors=make_anchors,
                           FakeTeacher=FakeTeacher, mean=STUDENT_MEAN, std=STUDENT_STD,
                           epochs=epoch_records)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """Overrides that shrink tiny.yaml to seconds: 32 px, 4 train + 2 test images per class, 1 epoch each."""
    cache = tmp_path_factory.mktemp("cache")
    return [
        f"cache_dir={cache}", "trainer.tensorboard=false", "data.synthetic.train_per_class=4",
        "data.synthetic.test_per_class=2", "data.synthetic.image_size=32", "student.image_size=32",
        "student.resize_size=36", "psc.epochs=1", "nsd.epochs=1", "nsd.batch_size=16", "trainer.log_every=1",
    ]
