"""The alignment heads (AlignNet) that map teacher features and class anchors to the student's dimension."""
import pytest
import torch

from pand.models.align import AlignHeads, l2_normalize


def test_align_heads_shapes_and_norms():
    heads = AlignHeads(teacher_dim=8, student_dim=5)
    a_img, a_txt = heads(torch.randn(4, 8), torch.randn(3, 8))
    assert a_img.shape == (4, 5) and a_txt.shape == (3, 5)
    assert torch.allclose(a_img.norm(dim=1), torch.ones(4), atol=1e-5)
    assert [type(m).__name__ for m in heads.img] == ["Linear", "ReLU", "Linear"]
    with pytest.raises(ValueError, match="teacher dim 8"):
        heads(torch.randn(4, 7), torch.randn(3, 7))
    assert l2_normalize(torch.zeros(2, 3)).abs().sum() == 0  # eps keeps zero vectors finite
    assert l2_normalize(torch.ones(1, 4, dtype=torch.bfloat16)).dtype == torch.float32
