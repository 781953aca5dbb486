import math

import torch

from model.rotations import matrix_to_quat, quat_multiply, quat_to_matrix, slerp


def random_quats(n, seed=0):
    q = torch.randn(n, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return q / q.norm(dim=-1, keepdim=True)


def test_known_rotation_about_z():
    angle = 0.7
    q = torch.tensor([math.cos(angle / 2), 0, 0, math.sin(angle / 2)], dtype=torch.float64)
    c, s = math.cos(angle), math.sin(angle)
    expected = torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=torch.float64)
    assert torch.allclose(quat_to_matrix(q), expected, atol=1e-12)


def test_matrices_are_rotations_and_round_trip():
    q = random_quats(500)
    m = quat_to_matrix(q)
    eye = torch.eye(3, dtype=torch.float64).expand_as(m)
    assert torch.allclose(m @ m.transpose(-1, -2), eye, atol=1e-12)
    assert torch.allclose(torch.det(m), torch.ones(500, dtype=torch.float64), atol=1e-12)
    back = matrix_to_quat(m)
    sign = torch.sign((back * q).sum(-1, keepdim=True))
    assert torch.allclose(back * sign, q, atol=1e-10)
    # the 180-degree rotations, where the trace branch alone would divide by ~0
    flips = torch.diag_embed(torch.tensor([[1.0, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=torch.float64))
    assert torch.allclose(quat_to_matrix(matrix_to_quat(flips)), flips, atol=1e-12)


def test_product_composes_rotations():
    a, b = random_quats(50, 1), random_quats(50, 2)
    assert torch.allclose(quat_to_matrix(quat_multiply(a, b)), quat_to_matrix(a) @ quat_to_matrix(b), atol=1e-12)


def test_slerp_endpoints_and_constant_speed():
    a, b = random_quats(20, 3), random_quats(20, 4)
    assert torch.allclose(slerp(a, b, torch.zeros(20, dtype=torch.float64)), a, atol=1e-12)
    end = slerp(a, b, torch.ones(20, dtype=torch.float64))
    assert torch.allclose(end * torch.sign((end * b).sum(-1, keepdim=True)), b, atol=1e-10)
    mid = slerp(a, b, torch.full((20,), 0.5, dtype=torch.float64))
    angle = lambda p, q: 2 * torch.acos((p * q).sum(-1).abs().clamp(max=1))  # noqa: E731
    assert torch.allclose(angle(a, mid), angle(mid, b), atol=1e-8)
