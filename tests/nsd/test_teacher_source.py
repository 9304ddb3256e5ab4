"""The teacher seam (pand.models.teacher_source): re-normalisation and the live teacher as a TeacherSource."""
import torch

from pand.models.teacher_source import LiveTeacher, TeacherSource, renormalize


def test_renormalize_matches_manual_and_resizes():
    pixels = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    sm, ss, tm, ts = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), (0.48, 0.46, 0.41), (0.27, 0.26, 0.28)
    x = (pixels - torch.tensor(sm).view(1, 3, 1, 1)) / torch.tensor(ss).view(1, 3, 1, 1)
    want = (pixels - torch.tensor(tm).view(1, 3, 1, 1)) / torch.tensor(ts).view(1, 3, 1, 1)
    got = renormalize(x.float(), sm, ss, tm, ts, size=8)
    assert torch.allclose(got.double(), want, atol=1e-5)
    resized = renormalize(x.float(), sm, ss, tm, ts, size=(12, 10), interpolation="bilinear")
    assert resized.shape == (2, 3, 12, 10)
    # resize after the affine map == affine map of resized pixels
    ref = torch.nn.functional.interpolate(pixels.float(), size=(12, 10), mode="bilinear", antialias=True,
                                          align_corners=False)
    ref = (ref - torch.tensor(tm).view(1, 3, 1, 1)) / torch.tensor(ts).view(1, 3, 1, 1)
    assert torch.allclose(resized, ref.float(), atol=1e-5)


def test_live_teacher_is_a_teacher_source(toy):
    t = toy.FakeTeacher(image_size=16)
    src = LiveTeacher(t, toy.mean, toy.std)
    assert isinstance(src, TeacherSource) and src.views(7, 100) == 7
    f = src.features(torch.randn(3, 3, 12, 12), torch.arange(3))
    assert f.shape == (3, 8) and torch.allclose(f.norm(dim=1), torch.ones(3), atol=1e-5)
    assert t.seen[-1].shape[-1] == 16
    LiveTeacher(t, toy.mean, toy.std, resize=False).features(torch.randn(1, 3, 12, 12), torch.arange(1))
    assert t.seen[-1].shape[-1] == 12
