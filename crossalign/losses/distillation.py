"""Similarity distillation: a student dual encoder learns the teacher's retrieval
distributions.

For a batch of N pairs, a dual encoder defines, for every image, a distribution over the
N captions (the softmax of its row of scaled similarities) and, for every caption, one
over the N images (the softmax of its column). Distillation asks the student to
reproduce the teacher's distributions, not just its top choice: which wrong captions the
teacher finds plausible ("dark knowledge", Hinton et al. 2015) is information the
one-hot labels of the CLIP loss do not carry. The teacher may be larger and live in
another embedding size; only the batch must be the same.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from crossalign.losses.contrastive import _check_features, _check_scale

__all__ = ["similarity_distillation_loss"]

_DIRECTIONS = ("both", "image_to_text", "text_to_image")


def _check_model(
    image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor | float, role: str
) -> torch.Tensor | float:
    """Check one model's features and scale, naming the model in any error; return the
    checked scale."""
    try:
        _check_features(image, text)
        return _check_scale(scale)
    except (TypeError, ValueError) as error:
        raise type(error)(f"{role} features or scale: {error}") from error


def _row_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """Mean over rows of KL(softmax(teacher row) || softmax(student row))."""
    teacher_log_probs = F.log_softmax(teacher_logits, dim=1)
    student_log_probs = F.log_softmax(student_logits, dim=1)
    return F.kl_div(
        student_log_probs, teacher_log_probs, log_target=True, reduction="batchmean"
    )


def similarity_distillation_loss(
    student_image: torch.Tensor,
    student_text: torch.Tensor,
    teacher_image: torch.Tensor,
    teacher_text: torch.Tensor,
    student_scale: torch.Tensor | float,
    teacher_scale: torch.Tensor | float,
    direction: str = "both",
) -> torch.Tensor:
    """KL(teacher || student) between the softmax retrieval distributions of N pairs,
    averaged over queries.

    ``student_image`` and ``student_text`` are [N, D_s], ``teacher_image`` and
    ``teacher_text`` are [N, D_t] (D_t may differ from D_s), all used as given (pass
    L2-normalised features). ``student_scale`` and ``teacher_scale`` are the models'
    ``1 / temperature``. With logits
    ``S = student_scale * student_image @ student_text.T`` and ``T`` likewise for the
    teacher:

    - ``"image_to_text"``: mean over images i of
      ``KL(softmax(T[i, :]) || softmax(S[i, :]))``;
    - ``"text_to_image"``: the same over the columns (captions as queries);
    - ``"both"`` (default): the average of the two.

    The teacher is detached (features and scale): it gets no gradient and is not
    trained. The loss is 0 exactly when the student's distributions equal the teacher's
    and positive otherwise. No ``T^2`` factor is applied; the scales play the role of
    the temperatures.
    """
    if direction not in _DIRECTIONS:
        raise ValueError(f"direction must be one of {_DIRECTIONS}, got {direction!r}")
    student_scale = _check_model(student_image, student_text, student_scale, "student")
    teacher_scale = _check_model(teacher_image, teacher_text, teacher_scale, "teacher")
    if teacher_image.shape[0] != student_image.shape[0]:
        raise ValueError(
            "student and teacher must see the same batch, got "
            f"{student_image.shape[0]} student pairs "
            f"and {teacher_image.shape[0]} teacher pairs"
        )
    student_logits = student_scale * (student_image @ student_text.T)
    with torch.no_grad():
        teacher_logits = teacher_scale * (teacher_image @ teacher_text.T)
    if direction == "image_to_text":
        return _row_kl(teacher_logits, student_logits)
    if direction == "text_to_image":
        return _row_kl(teacher_logits.T, student_logits.T)
    return (
        _row_kl(teacher_logits, student_logits)
        + _row_kl(teacher_logits.T, student_logits.T)
    ) / 2
