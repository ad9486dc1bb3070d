"""Triplet (VSE0/VSE++), siamese, adversarial, distillation and hard-negative losses
against independent truth.

Every loss is compared with a formulation written here with Python loops over pairs and
``math`` (not with the vectorised code under test), with hand-computed tiny cases, and
with finite differences in float64.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from numerics import central_differences
from torch.autograd import gradcheck

from crossalign.losses import clip_loss
from crossalign.losses.adversarial import (
    GradientReversal,
    ModalityDiscriminator,
    adversarial_alignment_loss,
    grad_reverse,
)
from crossalign.losses.distillation import similarity_distillation_loss
from crossalign.losses.hard_negatives import clip_loss_with_hard_negatives
from crossalign.losses.ranking import (
    SiameseContrastiveLoss,
    TripletLoss,
    siamese_contrastive_loss,
    triplet_loss,
)


def _random_features(
    n: int, d: int, seed: int, dtype=torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded, L2-normalised image and text features of shape [n, d]."""
    gen = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(n, d, generator=gen, dtype=dtype), dim=1)
    text = F.normalize(torch.randn(n, d, generator=gen, dtype=dtype), dim=1)
    return image, text


def _dot(a: list[float], b: list[float]) -> float:
    """Dot product of two Python lists, summed exactly."""
    return math.fsum(x * y for x, y in zip(a, b))


def _logsumexp(values: list[float]) -> float:
    """log(sum(exp(v))) in plain Python, shifted by the maximum for stability."""
    top = max(values)
    return top + math.log(math.fsum(math.exp(v - top) for v in values))


# ---------------------------------------------------------------- triplet ranking
# (VSE0, VSE++)


def reference_triplet(
    image: torch.Tensor,
    text: torch.Tensor,
    margin: float,
    hardest: bool,
    reduction: str,
) -> float:
    """VSE0 / VSE++ with explicit loops over (query, negative) pairs, in both
    directions."""
    rows, cols = image.tolist(), text.tolist()
    n = len(rows)
    s = [[_dot(rows[i], cols[j]) for j in range(n)] for i in range(n)]
    total = 0.0
    for i in range(n):  # image i queries the captions
        hinges = [max(0.0, margin + s[i][j] - s[i][i]) for j in range(n) if j != i]
        total += (max(hinges) if hardest else math.fsum(hinges)) if hinges else 0.0
    for j in range(n):  # caption j queries the images
        hinges = [max(0.0, margin + s[i][j] - s[j][j]) for i in range(n) if i != j]
        total += (max(hinges) if hardest else math.fsum(hinges)) if hinges else 0.0
    return total if reduction == "sum" else total / n


@pytest.mark.parametrize("hardest", [False, True])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize(
    ("n", "d", "margin", "seed"),
    [(1, 3, 0.2, 0), (2, 4, 0.2, 1), (5, 3, 0.5, 2), (12, 6, 0.2, 3)],
)
def test_triplet_matches_loop_reference(
    n: int, d: int, margin: float, seed: int, hardest: bool, reduction: str
) -> None:
    image, text = _random_features(n, d, seed)
    got = triplet_loss(image, text, margin=margin, hardest=hardest, reduction=reduction)
    expected = reference_triplet(image, text, margin, hardest, reduction)
    assert got.item() == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert expected > 0 or n == 1  # active hinges are exercised, not only zeros


def test_triplet_hand_computed_three_pairs() -> None:
    """Images on the axes, so the similarity matrix is whatever the caption columns say.

    Hinges with margin 0.2: image queries give 0 (row 0), 0.1 (row 1), 0.1 + 0.5 (row
    2); caption queries give 0 (col 0), 0.1 (col 1), 0.5 (col 2). VSE0 = 1.3, VSE++ =
    0.6 + 0.6.
    """
    similarities = torch.tensor(
        [[0.9, 0.5, 0.1], [0.3, 0.8, 0.7], [0.3, 0.7, 0.4]], dtype=torch.float64
    )
    image, text = torch.eye(3, dtype=torch.float64), similarities.T.contiguous()
    assert triplet_loss(image, text, margin=0.2).item() == pytest.approx(1.3, abs=1e-12)
    assert triplet_loss(image, text, margin=0.2, hardest=True).item() == pytest.approx(
        1.2, abs=1e-12
    )
    assert triplet_loss(
        image, text, margin=0.2, reduction="mean"
    ).item() == pytest.approx(1.3 / 3, abs=1e-12)
    assert triplet_loss(image, text, 0.2, True, "mean").item() == pytest.approx(
        0.4, abs=1e-12
    )


def test_triplet_hand_computed_two_pairs_with_known_cosines() -> None:
    """u = e1, e2; v1 = (0.8, 0.6), v2 = (0, 1): cosines s11 = 0.8, s12 = 0, s21 = 0.6,
    s22 = 1.

    Margin 0.5: image 2 vs caption 1 costs 0.5 + 0.6 - 1 = 0.1, caption 1 vs image 2
    costs 0.5 + 0.6 - 0.8 = 0.3, the other two hinges are inactive: total 0.4.
    """
    image = torch.eye(2, dtype=torch.float64)
    text = torch.tensor([[0.8, 0.6], [0.0, 1.0]], dtype=torch.float64)
    for hardest in (False, True):
        assert triplet_loss(
            image, text, margin=0.5, hardest=hardest
        ).item() == pytest.approx(0.4, abs=1e-12)
    assert triplet_loss(image, text, margin=0.0).item() == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_vse_plus_plus_equals_vse0_for_two_pairs(seed: int) -> None:
    image, text = _random_features(2, 5, seed)
    for reduction in ("sum", "mean"):
        vse0 = triplet_loss(image, text, margin=0.7, reduction=reduction)
        vse_pp = triplet_loss(
            image, text, margin=0.7, hardest=True, reduction=reduction
        )
        assert torch.equal(vse0, vse_pp)
        assert vse0.item() > 0


def test_vse_plus_plus_is_below_vse0_for_larger_batches() -> None:
    image, text = _random_features(8, 4, seed=20)
    assert (
        0
        < triplet_loss(image, text, hardest=True).item()
        < triplet_loss(image, text).item()
    )


@pytest.mark.parametrize("hardest", [False, True])
def test_triplet_gradients_match_finite_differences(hardest: bool) -> None:
    image, text = _random_features(6, 4, seed=21)
    image.requires_grad_(True)
    text.requires_grad_(True)
    assert gradcheck(
        lambda u, v: triplet_loss(u, v, margin=0.3, hardest=hardest), (image, text)
    )
    triplet_loss(image, text, margin=0.3, hardest=hardest).backward()
    assert image.grad.abs().sum() > 0 and text.grad.abs().sum() > 0


def test_triplet_uses_features_as_given() -> None:
    """Doubling both inputs multiplies every similarity by 4, which changes the hinges:
    no hidden normalisation."""
    image, text = _random_features(6, 3, seed=22)
    assert triplet_loss(2 * image, 2 * text).item() != pytest.approx(
        triplet_loss(image, text).item(), rel=1e-3
    )
    expected = reference_triplet(2 * image, 2 * text, 0.2, False, "sum")
    assert triplet_loss(2 * image, 2 * text).item() == pytest.approx(
        expected, rel=1e-12
    )


def test_triplet_module_equals_function() -> None:
    image, text = _random_features(7, 5, seed=23)
    module = TripletLoss(margin=0.4, hardest=True, reduction="mean")
    assert torch.equal(
        module(image, text), triplet_loss(image, text, 0.4, True, "mean")
    )
    assert "hardest=True" in repr(module)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"margin": -0.1}, ValueError, "margin must be a finite number >= 0"),
        ({"margin": float("nan")}, ValueError, "margin must be a finite number >= 0"),
        ({"margin": "0.2"}, TypeError, "margin must be a float"),
        ({"hardest": 1}, TypeError, "hardest must be True"),
        ({"reduction": "none"}, ValueError, "reduction must be one of"),
    ],
)
def test_triplet_argument_errors(kwargs: dict, error: type, message: str) -> None:
    image, text = _random_features(3, 2, seed=24)
    with pytest.raises(error, match=message):
        triplet_loss(image, text, **kwargs)
    with pytest.raises(error, match=message):
        TripletLoss(**kwargs)


def test_triplet_shape_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match="same number of pairs"):
        triplet_loss(torch.zeros(4, 3), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="text_features must be 2-D"):
        triplet_loss(torch.zeros(4, 3), torch.zeros(4))


# ---------------------------------------------------------------- siamese contrastive


def reference_siamese(
    image: torch.Tensor, text: torch.Tensor, same: list[bool], margin: float
) -> float:
    """Hadsell et al. without the 1/2 factor, pair by pair, with the distance from
    math.dist."""
    costs = []
    for a, b, is_same in zip(image.tolist(), text.tolist(), same):
        distance = math.dist(a, b)
        costs.append(distance**2 if is_same else max(0.0, margin - distance) ** 2)
    return math.fsum(costs) / len(costs)


@pytest.mark.parametrize(
    ("n", "d", "margin", "seed"), [(1, 2, 0.5, 0), (6, 3, 1.5, 1), (20, 8, 1.2, 2)]
)
def test_siamese_matches_loop_reference(
    n: int, d: int, margin: float, seed: int
) -> None:
    image, text = _random_features(n, d, seed)
    same = torch.rand(n, generator=torch.Generator().manual_seed(seed)) < 0.5
    got = siamese_contrastive_loss(image, text, same, margin=margin)
    assert got.item() == pytest.approx(
        reference_siamese(image, text, same.tolist(), margin), rel=1e-12, abs=1e-15
    )


def test_siamese_hand_computed() -> None:
    """Distances 0.5 (same: 0.25), 0.3 (different, margin 0.5: 0.2^2 = 0.04), 1.0
    (different, beyond the margin: 0)."""
    image = torch.zeros(3, 2, dtype=torch.float64)
    text = torch.tensor([[0.3, 0.4], [0.0, 0.3], [0.6, 0.8]], dtype=torch.float64)
    same = torch.tensor([True, False, False])
    assert siamese_contrastive_loss(
        image, text, same, margin=0.5
    ).item() == pytest.approx(0.29 / 3, abs=1e-15)
    module = SiameseContrastiveLoss(margin=0.5)
    assert torch.equal(
        module(image, text, same), siamese_contrastive_loss(image, text, same, 0.5)
    )


def test_siamese_gradients_match_finite_differences() -> None:
    image, text = _random_features(8, 3, seed=30)
    same = torch.tensor([True, False] * 4)
    distances = (image - text).norm(dim=1)
    # no mismatched pair sits on the hinge's kink
    assert ((distances[~same] - 1.3).abs() > 1e-3).all()
    # and some mismatched pairs are inside the margin
    assert (distances[~same] < 1.3).any()
    image.requires_grad_(True)
    text.requires_grad_(True)
    assert gradcheck(
        lambda u, v: siamese_contrastive_loss(u, v, same, margin=1.3), (image, text)
    )


def test_siamese_mismatched_pair_at_zero_distance_has_finite_gradient() -> None:
    point = torch.tensor([[0.6, 0.8]], dtype=torch.float64, requires_grad=True)
    loss = siamese_contrastive_loss(
        point, point.detach().clone(), torch.tensor([False]), margin=0.5
    )
    loss.backward()
    assert loss.item() == pytest.approx(0.25, abs=1e-15)
    assert torch.isfinite(point.grad).all()


def test_siamese_argument_errors() -> None:
    image, text = _random_features(3, 2, seed=31)
    with pytest.raises(TypeError, match="same must be a boolean tensor"):
        siamese_contrastive_loss(image, text, torch.tensor([1, 0, 1]))
    with pytest.raises(ValueError, match=r"same must have shape \[3\]"):
        siamese_contrastive_loss(image, text, torch.tensor([True, False]))
    with pytest.raises(TypeError, match="same must be a torch.Tensor"):
        siamese_contrastive_loss(image, text, [True, False, True])
    with pytest.raises(ValueError, match="margin must be a finite number >= 0"):
        SiameseContrastiveLoss(margin=-1.0)
    with pytest.raises(ValueError, match="same embedding space"):
        siamese_contrastive_loss(image, text[:, :1], torch.tensor([True, False, True]))


# ---------------------------------------------------------------- gradient reversal and
# the discriminator


@pytest.mark.parametrize("lambda_", [0.0, 1e-3, 0.5, 1.0, 2.75, 3])
def test_gradient_reversal_forward_is_identity_and_backward_is_exactly_minus_lambda(
    lambda_: float,
) -> None:
    gen = torch.Generator().manual_seed(40)
    x = torch.randn(4, 5, generator=gen, requires_grad=True)
    incoming = torch.randn(4, 5, generator=gen)
    out = grad_reverse(x, lambda_)
    assert torch.equal(out, x)
    out.backward(incoming)
    assert torch.equal(x.grad, -lambda_ * incoming)


def test_gradient_reversal_through_a_graph_reverses_exactly_the_upstream_gradient() -> (
    None
):
    """With g the gradient of f at x, f(GRL(x)) gives x exactly -lambda * g; lambda = 0
    blocks it."""
    gen = torch.Generator().manual_seed(41)
    x = torch.randn(3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 2, generator=gen, dtype=torch.float64)

    def f(features: torch.Tensor) -> torch.Tensor:
        return torch.tanh(features @ weight).pow(2).sum()

    (plain,) = torch.autograd.grad(f(x), x)
    for lambda_ in (0.0, 0.3, 1.0):
        layer = GradientReversal(lambda_)
        (reversed_grad,) = torch.autograd.grad(f(layer(x)), x)
        assert torch.equal(reversed_grad, -lambda_ * plain)
    assert torch.equal(
        torch.autograd.grad(f(GradientReversal(0.0)(x)), x)[0], torch.zeros_like(x)
    )


def test_gradient_reversal_module_follows_a_schedule() -> None:
    layer = GradientReversal(0.0)
    x = torch.ones(2, requires_grad=True)
    layer.lambda_ = 0.25
    layer(x).sum().backward()
    assert torch.equal(x.grad, torch.full((2,), -0.25))
    assert "lambda_=0.25" in repr(layer)


def test_gradient_reversal_output_is_safe_to_modify_in_place() -> None:
    x = torch.arange(3.0, requires_grad=True)
    out = grad_reverse(x, 2.0)
    out.mul_(3)
    out.sum().backward()
    assert torch.equal(x.detach(), torch.arange(3.0))
    assert torch.equal(x.grad, torch.full((3,), -6.0))


@pytest.mark.parametrize(
    ("lambda_", "error"),
    [(-1.0, ValueError), (float("inf"), ValueError), ("1", TypeError)],
)
def test_gradient_reversal_rejects_bad_lambda(lambda_, error: type) -> None:
    with pytest.raises(error, match="lambda_ must be"):
        grad_reverse(torch.ones(2), lambda_)
    with pytest.raises(error, match="lambda_ must be"):
        GradientReversal(lambda_)


def _discriminator(dim: int, seed: int) -> ModalityDiscriminator:
    """A small, seeded float64 discriminator."""
    torch.manual_seed(seed)
    return ModalityDiscriminator(dim, hidden=8).double()


def reference_modality_bce(
    discriminator: ModalityDiscriminator, image: torch.Tensor, text: torch.Tensor
) -> float:
    """BCE written out: -log sigmoid(z) for every image logit, -log(1 - sigmoid(z)) for
    every text logit."""
    with torch.no_grad():
        image_logits = discriminator(image).tolist()
        text_logits = discriminator(text).tolist()
    terms = [-math.log(1 / (1 + math.exp(-z))) for z in image_logits]
    terms += [-math.log(1 - 1 / (1 + math.exp(-z))) for z in text_logits]
    return math.fsum(terms) / len(terms)


def test_discriminator_outputs_one_logit_per_embedding() -> None:
    discriminator = _discriminator(5, seed=42)
    assert discriminator(torch.zeros(7, 5, dtype=torch.float64)).shape == (7,)
    with pytest.raises(ValueError, match=r"expects features of shape \[batch, 5\]"):
        discriminator(torch.zeros(7, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        ModalityDiscriminator(0)


@pytest.mark.parametrize("lambda_", [0.0, 0.5, 1.0])
def test_adversarial_loss_value_is_the_discriminator_bce(lambda_: float) -> None:
    image, text = _random_features(6, 5, seed=43)
    discriminator = _discriminator(5, seed=43)
    got = adversarial_alignment_loss(image, text, discriminator, lambda_=lambda_)
    assert got.item() == pytest.approx(
        reference_modality_bce(discriminator, image, text), rel=1e-12
    )


def test_adversarial_gradients_discriminator_descends_and_encoders_ascend() -> None:
    """Parameters get the true BCE gradient (finite differences); features get exactly
    -lambda times it."""
    lambda_ = 0.7
    image, text = _random_features(4, 3, seed=44)
    discriminator = _discriminator(3, seed=44)
    image.requires_grad_(True)
    text.requires_grad_(True)
    adversarial_alignment_loss(image, text, discriminator, lambda_).backward()

    def loss() -> torch.Tensor:
        return adversarial_alignment_loss(image, text, discriminator, lambda_)

    for parameter in (
        discriminator.layers[0].weight,
        discriminator.layers[4].weight,
        discriminator.layers[4].bias,
    ):
        torch.testing.assert_close(
            parameter.grad, central_differences(loss, parameter), rtol=1e-6, atol=1e-9
        )
    torch.testing.assert_close(
        image.grad, -lambda_ * central_differences(loss, image), rtol=1e-6, atol=1e-9
    )
    torch.testing.assert_close(
        text.grad, -lambda_ * central_differences(loss, text), rtol=1e-6, atol=1e-9
    )
    assert image.grad.abs().sum() > 0


def test_one_gradient_step_moves_the_two_players_in_opposite_directions() -> None:
    """A small step along -grad lowers the BCE when the discriminator moves and raises
    it when the features move."""
    image, text = _random_features(16, 4, seed=45)
    discriminator = _discriminator(4, seed=45)
    image.requires_grad_(True)
    text.requires_grad_(True)
    before = adversarial_alignment_loss(image, text, discriminator)
    before.backward()
    step = 1e-2
    with torch.no_grad():
        moved_features = adversarial_alignment_loss(
            image - step * image.grad, text - step * text.grad, discriminator
        )
        for parameter in discriminator.parameters():
            parameter -= step * parameter.grad
        moved_discriminator = adversarial_alignment_loss(image, text, discriminator)
    assert moved_features.item() > before.item()
    assert moved_discriminator.item() < before.item()


def test_adversarial_loss_checks_the_discriminator_output() -> None:
    image, text = _random_features(3, 4, seed=46)
    # [2N, 1] is accepted
    assert adversarial_alignment_loss(image, text, lambda f: f[:, :1]).shape == ()
    with pytest.raises(ValueError, match=r"one logit per embedding, shape \[6\]"):
        adversarial_alignment_loss(image, text, lambda f: f)
    with pytest.raises(ValueError, match="same number of pairs"):
        adversarial_alignment_loss(image, text[:2], _discriminator(4, seed=46))


# ---------------------------------------------------------------- similarity
# distillation


def reference_distillation(
    student: tuple[torch.Tensor, torch.Tensor],
    teacher: tuple[torch.Tensor, torch.Tensor],
    student_scale: float,
    teacher_scale: float,
    direction: str,
) -> float:
    """Mean over queries of sum_j p_j log(p_j / q_j), softmaxes and sums written out in
    Python."""

    def logits(
        image: torch.Tensor, text: torch.Tensor, scale: float
    ) -> list[list[float]]:
        rows, cols = image.tolist(), text.tolist()
        return [[scale * _dot(r, c) for c in cols] for r in rows]

    def softmax(row: list[float]) -> list[float]:
        norm = _logsumexp(row)
        return [math.exp(v - norm) for v in row]

    def mean_kl(
        teacher_rows: list[list[float]], student_rows: list[list[float]]
    ) -> float:
        kls = []
        for t_row, s_row in zip(teacher_rows, student_rows):
            p, q = softmax(t_row), softmax(s_row)
            kls.append(math.fsum(pj * math.log(pj / qj) for pj, qj in zip(p, q)))
        return math.fsum(kls) / len(kls)

    s = logits(*student, student_scale)
    t = logits(*teacher, teacher_scale)
    image_to_text = mean_kl(t, s)
    text_to_image = mean_kl([list(c) for c in zip(*t)], [list(c) for c in zip(*s)])
    return {"image_to_text": image_to_text, "text_to_image": text_to_image}.get(
        direction, (image_to_text + text_to_image) / 2
    )


@pytest.mark.parametrize("direction", ["both", "image_to_text", "text_to_image"])
@pytest.mark.parametrize(
    ("n", "d_student", "d_teacher", "seed"), [(1, 3, 3, 0), (5, 4, 4, 1), (9, 3, 7, 2)]
)
def test_distillation_matches_loop_reference(
    n: int, d_student: int, d_teacher: int, seed: int, direction: str
) -> None:
    student = _random_features(n, d_student, seed)
    teacher = _random_features(n, d_teacher, seed + 100)
    got = similarity_distillation_loss(
        *student, *teacher, 4.0, 10.0, direction=direction
    )
    expected = reference_distillation(student, teacher, 4.0, 10.0, direction)
    assert got.item() == pytest.approx(expected, rel=1e-10, abs=1e-14)


def test_distillation_matches_torch_distributions() -> None:
    student = _random_features(6, 4, seed=50)
    teacher = _random_features(6, 4, seed=51)
    s = 3.0 * student[0] @ student[1].T
    t = 8.0 * teacher[0] @ teacher[1].T

    def kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
        p = torch.distributions.Categorical(logits=teacher_logits)
        q = torch.distributions.Categorical(logits=student_logits)
        return torch.distributions.kl_divergence(p, q).mean()

    expected = (kl(t, s) + kl(t.T, s.T)) / 2
    got = similarity_distillation_loss(
        *student, *teacher, torch.tensor(3.0, dtype=torch.float64), 8.0
    )
    assert got.item() == pytest.approx(expected.item(), rel=1e-12)


def test_distillation_is_zero_for_equal_distributions_and_positive_otherwise() -> None:
    image, text = _random_features(7, 4, seed=52)
    assert (
        similarity_distillation_loss(image, text, image, text, 5.0, 5.0).item() == 0.0
    )
    # A teacher in a larger space with the same similarities (orthonormal rows map 4-D
    # to 6-D): still ~0.
    lift, _ = torch.linalg.qr(
        torch.randn(
            6, 4, generator=torch.Generator().manual_seed(52), dtype=torch.float64
        )
    )
    lifted = similarity_distillation_loss(
        image, text, image @ lift.T, text @ lift.T, 5.0, 5.0
    )
    assert abs(lifted.item()) < 1e-12
    assert (
        similarity_distillation_loss(image, text, image, text, 5.0, 9.0).item() > 1e-3
    )
    other_image, other_text = _random_features(7, 4, seed=53)
    for direction in ("both", "image_to_text", "text_to_image"):
        assert (
            similarity_distillation_loss(
                image, text, other_image, other_text, 5.0, 5.0, direction
            ).item()
            > 1e-3
        )


def test_distillation_gradients_reach_the_student_only() -> None:
    student_image, student_text = _random_features(5, 3, seed=54)
    teacher_image, teacher_text = _random_features(5, 4, seed=55)
    student_scale = torch.tensor(4.0, dtype=torch.float64, requires_grad=True)
    teacher_scale = torch.tensor(6.0, dtype=torch.float64, requires_grad=True)
    for tensor in (student_image, student_text, teacher_image, teacher_text):
        tensor.requires_grad_(True)

    def loss(u: torch.Tensor, v: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return similarity_distillation_loss(
            u, v, teacher_image, teacher_text, scale, teacher_scale
        )

    assert gradcheck(loss, (student_image, student_text, student_scale))
    loss(student_image, student_text, student_scale).backward()
    assert student_scale.grad.abs().item() > 0
    assert (
        teacher_image.grad is None
        and teacher_text.grad is None
        and teacher_scale.grad is None
    )


def test_distillation_argument_errors() -> None:
    image, text = _random_features(4, 3, seed=56)
    with pytest.raises(ValueError, match="direction must be one of"):
        similarity_distillation_loss(
            image, text, image, text, 1.0, 1.0, direction="forward"
        )
    with pytest.raises(ValueError, match="student and teacher must see the same batch"):
        similarity_distillation_loss(image, text, image[:3], text[:3], 1.0, 1.0)
    with pytest.raises(
        ValueError, match="teacher features or scale: text_features must be 2-D"
    ):
        similarity_distillation_loss(image, text, image, text[0], 1.0, 1.0)
    with pytest.raises(
        ValueError, match="student features or scale: logit_scale must be a scalar"
    ):
        similarity_distillation_loss(image, text, image, text, torch.ones(2), 1.0)
    with pytest.raises(
        TypeError,
        match="teacher features or scale: image_features must be a torch.Tensor",
    ):
        similarity_distillation_loss(image, text, image.tolist(), text, 1.0, 1.0)


# ---------------------------------------------------------------- CLIP with hard
# negatives


def reference_hard_negative_clip(
    image: torch.Tensor,
    text: torch.Tensor,
    negatives: torch.Tensor,
    mask: torch.Tensor,
    scale: float,
) -> float:
    """Image i's row: N captions plus its valid negatives; caption j's column: the N
    images. Loops only."""
    rows, cols, extra, keep = (
        image.tolist(),
        text.tolist(),
        negatives.tolist(),
        mask.tolist(),
    )
    n = len(rows)
    logits = [[scale * _dot(rows[i], cols[j]) for j in range(n)] for i in range(n)]
    image_to_text = []
    for i in range(n):
        row = logits[i] + [
            scale * _dot(rows[i], w) for w, valid in zip(extra[i], keep[i]) if valid
        ]
        image_to_text.append(_logsumexp(row) - logits[i][i])
    text_to_image = [
        _logsumexp([logits[i][j] for i in range(n)]) - logits[j][j] for j in range(n)
    ]
    return (math.fsum(image_to_text) / n + math.fsum(text_to_image) / n) / 2


def _negatives(
    n: int, k: int, d: int, seed: int, dtype=torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded unit-norm negatives [n, k, d] and a random mask [n, k] that keeps about
    two thirds."""
    gen = torch.Generator().manual_seed(seed)
    negatives = F.normalize(torch.randn(n, k, d, generator=gen, dtype=dtype), dim=2)
    mask = torch.rand(n, k, generator=gen) < 0.67
    return negatives, mask


@pytest.mark.parametrize("use_mask", [False, True])
@pytest.mark.parametrize(
    ("n", "k", "d", "scale", "seed"),
    [(1, 2, 3, 5.0, 0), (4, 3, 5, 14.3, 1), (10, 5, 6, 50.0, 2)],
)
def test_hard_negatives_match_loop_reference(
    n: int, k: int, d: int, scale: float, seed: int, use_mask: bool
) -> None:
    image, text = _random_features(n, d, seed)
    negatives, mask = _negatives(n, k, d, seed)
    if not use_mask:
        mask = torch.ones(n, k, dtype=torch.bool)
    got = clip_loss_with_hard_negatives(
        image, text, negatives, scale, mask if use_mask else None
    )
    expected = reference_hard_negative_clip(image, text, negatives, mask, scale)
    assert got.item() == pytest.approx(expected, rel=1e-12)
    assert got.item() > clip_loss(image, text, scale).item() or not mask.any()


def test_hard_negatives_hand_computed() -> None:
    """Orthonormal pairs plus one negative of cosine c per image: each image CE is log(1
    + (N-1)e^-s + e^{s(c-1)})."""
    n, scale, c = 3, 4.0, 0.6
    eye = torch.eye(n, dtype=torch.float64)
    negatives = torch.zeros(n, 1, n + 1, dtype=torch.float64)
    for i in range(n):
        # cosine c with image i, 0 with the rest
        negatives[i, 0, i], negatives[i, 0, n] = (
            c,
            math.sqrt(1 - c**2),
        )
    padded_eye = F.pad(eye, (0, 1))
    image_ce = math.log(1 + (n - 1) * math.exp(-scale) + math.exp(scale * (c - 1)))
    text_ce = math.log(1 + (n - 1) * math.exp(-scale))
    got = clip_loss_with_hard_negatives(padded_eye, padded_eye, negatives, scale)
    assert got.item() == pytest.approx((image_ce + text_ce) / 2, rel=1e-13)


def test_no_negatives_is_exactly_clip_loss() -> None:
    image, text = _random_features(8, 4, seed=60)
    scale = torch.tensor(1 / 0.07, dtype=torch.float64)
    empty = torch.zeros(8, 0, 4, dtype=torch.float64)
    assert torch.equal(
        clip_loss_with_hard_negatives(image, text, empty, scale),
        clip_loss(image, text, scale),
    )
    negatives, _ = _negatives(8, 3, 4, seed=60)
    none_kept = torch.zeros(8, 3, dtype=torch.bool)
    all_masked = clip_loss_with_hard_negatives(image, text, negatives, scale, none_kept)
    assert all_masked.item() == pytest.approx(
        clip_loss(image, text, scale).item(), rel=1e-14
    )


def test_masked_slots_are_ignored_even_when_they_hold_nan() -> None:
    image, text = _random_features(5, 4, seed=61)
    negatives, mask = _negatives(5, 4, 4, seed=61)
    mask[0] = False  # one image with no negative at all
    poisoned = torch.where(mask[..., None], negatives, float("nan"))
    results = []
    for candidates in (negatives, poisoned):
        u, v, w = (t.clone().requires_grad_(True) for t in (image, text, candidates))
        loss = clip_loss_with_hard_negatives(u, v, w, 7.0, mask)
        loss.backward()
        results.append((loss, u.grad, v.grad, w.grad))
    for clean, poisoned_result in zip(*results):
        assert torch.equal(clean, poisoned_result)
    negative_grad = results[1][3]
    assert torch.equal(negative_grad[~mask], torch.zeros_like(negative_grad[~mask]))
    assert negative_grad[mask].abs().min() > 0


def test_hard_negative_gradients_match_finite_differences() -> None:
    image, text = _random_features(4, 3, seed=62)
    negatives, mask = _negatives(4, 2, 3, seed=62)
    scale = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    for tensor in (image, text, negatives):
        tensor.requires_grad_(True)
    assert gradcheck(
        lambda u, v, w, s: clip_loss_with_hard_negatives(u, v, w, s, mask),
        (image, text, negatives, scale),
    )


@pytest.mark.parametrize(
    ("negative_shape", "mask", "error", "message"),
    [
        (
            (4, 3),
            None,
            ValueError,
            r"negative_text_features must have shape \[4, K, 3\]",
        ),
        (
            (5, 2, 3),
            None,
            ValueError,
            r"negative_text_features must have shape \[4, K, 3\]",
        ),
        (
            (4, 2, 2),
            None,
            ValueError,
            r"negative_text_features must have shape \[4, K, 3\]",
        ),
        (
            (4, 2, 3),
            torch.ones(4, 2),
            TypeError,
            "negative_mask must be a boolean tensor",
        ),
        (
            (4, 2, 3),
            torch.ones(4, 3, dtype=torch.bool),
            ValueError,
            r"negative_mask must have shape \[4, 2\]",
        ),
    ],
)
def test_hard_negative_argument_errors(
    negative_shape, mask, error: type, message: str
) -> None:
    image, text = _random_features(4, 3, seed=63)
    with pytest.raises(error, match=message):
        clip_loss_with_hard_negatives(
            image, text, torch.zeros(negative_shape, dtype=torch.float64), 1.0, mask
        )
    with pytest.raises(ValueError, match="same number of pairs"):
        clip_loss_with_hard_negatives(
            image, text[:3], torch.zeros(4, 1, 3, dtype=torch.float64), 1.0
        )
