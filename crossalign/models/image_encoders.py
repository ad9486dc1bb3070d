"""Image encoders: a small CNN for CPU work, torchvision ResNets, and a small Vision
Transformer.

Every encoder follows one contract, so the dual encoder, the captioners and the feature
cache can take any of them:

- input: ``images`` FloatTensor[B, 3, H, W] with values in [0, 1]; the encoder applies
  its own normalisation (``mean``/``std`` buffers), so data sets never need to know
  which model reads them;
- ``forward(images) -> [B, out_dim]``: one pooled vector per image;
- ``forward_grid(images) -> [B, grid_dim, h, w]``: spatial features, for attention
  overlays;
- ``forward_tokens(images) -> [B, h*w, grid_dim]``: the same features as a sequence, row
  by row (what attention captioners and cross-attention attend over).

``build_image_encoder(name, **kwargs)`` builds one by name; every encoder keeps the
arguments it was built with in ``encoder.config`` so that
``build_image_encoder(**encoder.config)`` rebuilds it (for checkpoints).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageEncoder(nn.Module):
    """Base class: input checks, normalisation and the grid-to-tokens view shared by all
    encoders.

    Subclasses set ``out_dim`` and ``grid_dim`` and implement ``forward`` and
    ``forward_grid``.
    """

    out_dim: int
    grid_dim: int
    mean: torch.Tensor  # the normalisation buffers registered in __init__
    std: torch.Tensor
    # Every subclass defines forward_grid; declared (not defined) here for type
    # checkers, so that hasattr(encoder, "forward_grid") still tells if one does.
    forward_grid: Callable[[torch.Tensor], torch.Tensor]

    def __init__(
        self,
        in_channels: int,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        """``mean``/``std`` default to 0.5 per channel, which maps [0, 1] images to [-1,
        1]."""
        super().__init__()
        mean = tuple(mean) if mean is not None else (0.5,) * in_channels
        std = tuple(std) if std is not None else (0.5,) * in_channels
        if len(mean) != in_channels or len(std) != in_channels:
            raise ValueError(
                f"mean and std need one value per input channel ({in_channels}), got "
                f"{len(mean)} and {len(std)}"
            )
        if any(s <= 0 for s in std):
            raise ValueError(f"std values must be positive, got {tuple(std)}")
        self.in_channels = in_channels
        self.channel_mean, self.channel_std = mean, std
        # Constants derived from the config, so not saved in checkpoints
        # (persistent=False).
        self.register_buffer(
            "mean",
            torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1),
            persistent=False,
        )
        self.register_buffer(
            "std",
            torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1),
            persistent=False,
        )

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Check that ``images`` is a [B, C, H, W] float batch and standardise it with
        ``mean``/``std``."""
        if images.dim() != 4 or images.shape[1] != self.in_channels:
            raise ValueError(
                f"images must have shape [B, {self.in_channels}, H, W], got "
                f"{tuple(images.shape)}"
            )
        if not images.is_floating_point():
            raise TypeError(
                f"images must be floats in [0, 1], got dtype {images.dtype}; convert "
                "with images.float() / 255"
            )
        return (images - self.mean) / self.std

    def forward_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Return spatial features as a sequence ``[B, h*w, grid_dim]`` (row-major over
        the grid)."""
        return self.forward_grid(images).flatten(2).transpose(1, 2)


def coordinate_grid(
    batch: int,
    height: int,
    width: int,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Return CoordConv channels ``[B, 2, H, W]``: x (left -1 to right +1), then y (top
    -1 to bottom +1).

    Appended to an image, they let convolutions, which are translation-equivariant, know
    *where* a feature is, which relations such as "left of" or "above" depend on.
    """
    xs = torch.linspace(-1.0, 1.0, width, device=device, dtype=dtype)
    ys = torch.linspace(-1.0, 1.0, height, device=device, dtype=dtype)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y]).unsqueeze(0).expand(batch, 2, height, width)


class SmallCNN(ImageEncoder):
    """A fast CNN for small images (ShapesWorld at 32-224 pixels): conv-BN-ReLU stages
    that halve the grid.

    Args:
        in_channels: image channels (3 for RGB). widths: output channels of each stage.
        strides: stride of each stage (default 2 everywhere, halving the grid per
        stage); a
            first stride of 1 keeps full resolution for small objects at some cost in
            speed.
        downsample: how a stage of stride ``s > 1`` shrinks the grid. ``"stride"``: the
        3x3
            convolution itself steps by ``s`` (cheapest). ``"maxpool"``: the convolution
            runs at full resolution and an ``s x s`` max-pool follows (about twice the
            compute). A strided convolution sees a small object differently at each of
            its ``s x s`` sub-pixel offsets, so shape detectors must be learnt once per
            offset; max-pooling is tolerant to such shifts. On ShapesWorld the caption
            loss then teaches shapes that a strided CNN of the same widths does not
            learn in the default budget (chapter 9,
            ``benchmarks/caption_encoder_ablation.py``).
        out_dim: size of the pooled output vector. coord_channels: append x/y coordinate
        channels to the input (see :func:`coordinate_grid`). pool: ``"avg"`` averages
        the final grid (position-blind); ``"flatten"`` averages it to a
            fixed ``flatten_grid x flatten_grid`` grid and flattens that through the
            linear head, so the output keeps where things are, for any input size.
        flatten_grid: side of the fixed grid used by ``pool="flatten"``.
        mean, std: per-channel input normalisation (default maps [0, 1] to [-1, 1]).
    """

    def __init__(
        self,
        in_channels: int = 3,
        widths: Sequence[int] = (32, 64, 128, 256),
        out_dim: int = 256,
        strides: Sequence[int] | None = None,
        downsample: str = "stride",
        coord_channels: bool = True,
        pool: str = "avg",
        flatten_grid: int = 4,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__(in_channels, mean, std)
        widths = tuple(int(w) for w in widths)
        if not widths or min(widths) < 1:
            raise ValueError(
                "widths must be a non-empty sequence of positive channel counts, got "
                f"{widths}"
            )
        strides = (
            tuple(int(s) for s in strides)
            if strides is not None
            else (2,) * len(widths)
        )
        if len(strides) != len(widths) or min(strides) < 1:
            raise ValueError(
                f"strides must give one positive stride per stage ({len(widths)}), got "
                f"{strides}"
            )
        if downsample not in ("stride", "maxpool"):
            raise ValueError(
                f"downsample must be 'stride' or 'maxpool', got {downsample!r}"
            )
        if pool not in ("avg", "flatten"):
            raise ValueError(f"pool must be 'avg' or 'flatten', got {pool!r}")
        if flatten_grid < 1:
            raise ValueError(f"flatten_grid must be >= 1, got {flatten_grid}")
        self.config: dict[str, Any] = {
            "name": "small_cnn",
            "in_channels": in_channels,
            "widths": list(widths),
            "out_dim": out_dim,
            "strides": list(strides),
            "downsample": downsample,
            "coord_channels": coord_channels,
            "pool": pool,
            "flatten_grid": flatten_grid,
            "mean": list(self.channel_mean),
            "std": list(self.channel_std),
        }
        self.coord_channels = coord_channels
        layers: list[nn.Module] = []
        channels = in_channels + (2 if coord_channels else 0)
        for width, stride in zip(widths, strides):
            conv_stride = stride if downsample == "stride" else 1
            layers += [
                nn.Conv2d(
                    channels,
                    width,
                    kernel_size=3,
                    stride=conv_stride,
                    padding=1,
                    bias=False,
                ),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            if downsample == "maxpool" and stride > 1:
                layers.append(nn.MaxPool2d(stride, ceil_mode=True))
            channels = width
        self.features = nn.Sequential(*layers)
        self.grid_dim = widths[-1]
        self.out_dim = out_dim
        pooled_size = 1 if pool == "avg" else flatten_grid
        self.spatial_pool = nn.AdaptiveAvgPool2d(pooled_size)
        self.head = nn.Linear(widths[-1] * pooled_size * pooled_size, out_dim)

    def forward_grid(self, images: torch.Tensor) -> torch.Tensor:
        """Return the last stage's feature grid
        ``[B, grid_dim, ceil(H/2^n), ceil(W/2^n)]``."""
        x = self.normalize(images)
        if self.coord_channels:
            batch, _, height, width = x.shape
            x = torch.cat(
                [x, coordinate_grid(batch, height, width, x.device, x.dtype)], dim=1
            )
            if images.is_contiguous(memory_format=torch.channels_last):
                x = x.contiguous(memory_format=torch.channels_last)
        return self.features(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Return one ``out_dim`` vector per image."""
        return self.head(self.spatial_pool(self.forward_grid(images)).flatten(1))


def resnet_names() -> list[str]:
    """Names of the torchvision ResNet-family models :class:`ResNetEncoder` accepts."""
    prefixes = ("resnet", "resnext", "wide_resnet")
    return sorted(
        n
        for n in torchvision.models.list_models(module=torchvision.models)
        if n.startswith(prefixes)
    )


def _torchvision_resnet(name: str, pretrained: bool) -> torchvision.models.ResNet:
    """Build a torchvision ResNet, with its default ImageNet weights when
    ``pretrained``."""
    if not pretrained:
        return torchvision.models.get_model(name, weights=None)
    weights = torchvision.models.get_model_weights(name).DEFAULT
    try:
        return torchvision.models.get_model(name, weights=weights)
    except (OSError, RuntimeError) as err:
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        file_name = Path(urlparse(weights.url).path).name
        raise RuntimeError(
            f"the pretrained weights for {name} ({weights}) could not be downloaded or "
            f"loaded: {err}. "
            f"torchvision caches downloaded weights in {cache}; to work offline, put "
            "the file "
            f"{file_name} there. Or use pretrained=False to train {name} from scratch."
        ) from err


class ResNetEncoder(ImageEncoder):
    """A torchvision ResNet without its classification head; ImageNet normalisation
    built in.

    Args:
        name: a torchvision ResNet-family model name (see :func:`resnet_names`), e.g.
        ``"resnet50"``. pretrained: load torchvision's default ImageNet weights
        (downloaded once, then cached);
            when they cannot be obtained, a RuntimeError says where to put them.
        trainable: ``False`` freezes every parameter and keeps batch-norm statistics
        fixed
            (the backbone stays in eval mode even under ``.train()``), the usual setting
            for a frozen feature extractor.
    """

    def __init__(
        self, name: str = "resnet50", pretrained: bool = False, trainable: bool = True
    ) -> None:
        super().__init__(3, IMAGENET_MEAN, IMAGENET_STD)
        valid = resnet_names()
        if name not in valid:
            raise ValueError(
                f"unknown ResNet name {name!r}; valid names: {', '.join(valid)}"
            )
        self.config: dict[str, Any] = {
            "name": name,
            "pretrained": pretrained,
            "trainable": trainable,
        }
        self.backbone = _torchvision_resnet(name, pretrained)
        self.out_dim = self.grid_dim = self.backbone.fc.in_features
        self.backbone.fc = nn.Identity()
        self.trainable = trainable
        if not trainable:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    def train(self, mode: bool = True) -> ResNetEncoder:
        """Set training mode; a frozen (``trainable=False``) backbone stays in eval
        mode."""
        super().train(mode)
        if not self.trainable:
            self.backbone.eval()
        return self

    def forward_grid(self, images: torch.Tensor) -> torch.Tensor:
        """Return the last residual stage's grid, e.g. ``[B, 2048, 7, 7]`` for resnet50
        at 224x224."""
        net = self.backbone
        x = net.maxpool(net.relu(net.bn1(net.conv1(self.normalize(images)))))
        return net.layer4(net.layer3(net.layer2(net.layer1(x))))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Return the globally average-pooled features ``[B, out_dim]`` (torchvision's
        pooling)."""
        return self.forward_grid(images).mean(dim=(2, 3))


def pre_norm_block(
    layer: nn.TransformerEncoderLayer, x: torch.Tensor, queries: int | None = None
) -> torch.Tensor:
    """One pre-norm ``nn.TransformerEncoderLayer`` (``batch_first``, no mask) applied to
    ``x [B, T, dim]``, with the layer's own weights, in fewer copies.

    ``nn.MultiheadAttention`` moves the projected queries, keys and values to
    sequence-first order and back; here they are viewed as ``[B, heads, T, head_dim]``
    straight from the packed projection and handed to
    ``F.scaled_dot_product_attention``, the kernel the layer itself calls. On a CPU
    this makes a ViT block's training step about 15% faster for the same result.
    ``queries=q`` computes the output of the first ``q`` tokens only (their keys and
    values still come from all of ``x``): ``[B, q, dim]``.
    """
    attention = layer.self_attn
    batch, tokens, dim = x.shape
    heads = attention.num_heads
    head_dim = dim // heads
    rows = tokens if queries is None else queries
    h = layer.norm1(x)
    weight, bias = attention.in_proj_weight, attention.in_proj_bias
    if queries is None:
        qkv = F.linear(h, weight, bias).view(batch, tokens, 3, heads, head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    else:
        w_q, w_kv = weight.split([dim, 2 * dim])
        b_q, b_kv = (None, None) if bias is None else bias.split([dim, 2 * dim])
        q = F.linear(h[:, :queries], w_q, b_q).view(batch, queries, heads, head_dim)
        q = q.transpose(1, 2)
        kv = F.linear(h, w_kv, b_kv).view(batch, tokens, 2, heads, head_dim)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)
        x = x[:, :queries]
    attended = F.scaled_dot_product_attention(
        q, k, v, dropout_p=attention.dropout if layer.training else 0.0
    )
    attended = attended.transpose(1, 2).reshape(batch, rows, dim)
    x = x + layer.dropout1(attention.out_proj(attended))
    hidden = layer.dropout(layer.activation(layer.linear1(layer.norm2(x))))
    return x + layer.dropout2(layer.linear2(hidden))


class ViTEncoder(ImageEncoder):
    """A small Vision Transformer: patch embedding, CLS token, learned positions,
    pre-norm blocks.

    The blocks are torch's ``nn.TransformerEncoderLayer`` (their weights and
    state-dict names), computed by :func:`pre_norm_block`; with CLS pooling the last
    block runs for the CLS token only (:meth:`_encode_cls`). Both give what
    ``self.blocks`` computes, up to float rounding (``tests/test_encoders.py`` checks
    outputs and gradients against it).

    Args:
        image_size: side of the (square) input images; other sizes are rejected.
        patch_size: side of a patch; must divide ``image_size``. dim, depth, heads,
        mlp_ratio, dropout: Transformer width, number of blocks, attention
            heads, hidden size of the MLP relative to ``dim``, dropout probability.
        out_dim: size of the pooled output (a linear head is added); ``None`` keeps
        ``dim``. pool: ``"cls"`` returns the CLS token, ``"mean"`` the average of the
        patch tokens. mean, std: per-channel input normalisation (default maps [0, 1] to
        [-1, 1]).
    """

    def __init__(
        self,
        image_size: int = 64,
        patch_size: int = 8,
        dim: int = 192,
        depth: int = 4,
        heads: int = 3,
        mlp_ratio: float = 4.0,
        out_dim: int | None = None,
        pool: str = "cls",
        dropout: float = 0.0,
        in_channels: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__(in_channels, mean, std)
        if image_size % patch_size != 0:
            raise ValueError(
                f"patch_size ({patch_size}) must divide image_size ({image_size})"
            )
        if dim % heads != 0:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        if pool not in ("cls", "mean"):
            raise ValueError(f"pool must be 'cls' or 'mean', got {pool!r}")
        self.config: dict[str, Any] = {
            "name": "vit",
            "image_size": image_size,
            "patch_size": patch_size,
            "dim": dim,
            "depth": depth,
            "heads": heads,
            "mlp_ratio": mlp_ratio,
            "out_dim": out_dim,
            "pool": pool,
            "dropout": dropout,
            "in_channels": in_channels,
            "mean": list(self.channel_mean),
            "std": list(self.channel_std),
        }
        self.image_size = image_size
        self.grid_size = image_size // patch_size
        self.pool = pool
        self.patch_embed = nn.Conv2d(
            in_channels, dim, kernel_size=patch_size, stride=patch_size
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid_size**2, dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        block = nn.TransformerEncoderLayer(
            dim,
            heads,
            int(dim * mlp_ratio),
            dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(block, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Identity() if out_dim is None else nn.Linear(dim, out_dim)
        self.grid_dim = dim
        self.out_dim = dim if out_dim is None else out_dim

    def _embed(self, images: torch.Tensor) -> torch.Tensor:
        """The input sequence ``[B, 1 + N, dim]``: CLS token, then the N patch
        embeddings, plus positions."""
        if images.dim() == 4 and tuple(images.shape[-2:]) != (
            self.image_size,
            self.image_size,
        ):
            raise ValueError(
                f"this ViT was built for {self.image_size}x{self.image_size} images, "
                "got "
                f"{images.shape[-2]}x{images.shape[-1]}; resize the images or build it "
                "with image_size="
            )
        patches = self.patch_embed(self.normalize(images)).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(patches.shape[0], -1, -1)
        return torch.cat([cls, patches], dim=1) + self.pos_embed

    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        """Return the final, normalised sequence ``[B, 1 + N, dim]``: CLS token, then
        the N patches."""
        x = self._embed(images)
        for layer in self.blocks.layers:
            x = pre_norm_block(layer, x)
        return self.norm(x)

    def _encode_cls(self, images: torch.Tensor) -> torch.Tensor:
        """Return the final, normalised CLS token ``[B, dim]``, computing only what it
        depends on.

        Every block but the last updates all tokens, since the CLS token attends to
        them. In the last block nothing else is read: its keys and values still come
        from every token, but the query, the attention output and the MLP are computed
        for the CLS token alone. At 65 tokens this skips about 10/12 of the last block's
        matrix products.
        """
        x = self._embed(images)
        *layers, last = self.blocks.layers
        for layer in layers:
            x = pre_norm_block(layer, x)
        return self.norm(pre_norm_block(last, x, queries=1)[:, 0])

    def forward_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Return the patch tokens ``[B, N, dim]`` (CLS excluded), row-major over the
        patch grid."""
        return self._encode(images)[:, 1:]

    def forward_grid(self, images: torch.Tensor) -> torch.Tensor:
        """Return the patch tokens arranged as a grid
        ``[B, dim, image_size/patch, image_size/patch]``."""
        tokens = self.forward_tokens(images)
        return tokens.transpose(1, 2).reshape(
            tokens.shape[0], self.grid_dim, self.grid_size, self.grid_size
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Return one ``out_dim`` vector per image (CLS token or mean of patch
        tokens)."""
        if self.pool == "cls":
            return self.head(self._encode_cls(images))
        return self.head(self._encode(images)[:, 1:].mean(dim=1))


class MaxPooledGrid(nn.Module):
    """An encoder whose pooled vector is the maximum of its feature grid over positions.

    Scene-label pretraining (:mod:`crossalign.train.encoder_pretraining`) trains a CNN's
    grid through exactly this pooling, so after it the per-channel maximum is the vector
    that says which shapes, colours and sizes are in the image; the CNN's own
    ``forward`` (a linear head that pretraining never touched) would not.
    ``forward_grid`` and ``forward_tokens`` pass through, so attention-based bridges
    read the same grid.
    """

    def __init__(self, encoder: ImageEncoder) -> None:
        super().__init__()
        if not hasattr(encoder, "forward_grid") or not hasattr(encoder, "grid_dim"):
            raise TypeError(
                f"{type(encoder).__name__} has no feature grid (forward_grid, "
                "grid_dim) to pool"
            )
        self.encoder = encoder
        self.out_dim = self.grid_dim = encoder.grid_dim

    def forward_grid(self, images: torch.Tensor) -> torch.Tensor:
        """The wrapped encoder's grid ``[B, grid_dim, h, w]``."""
        return self.encoder.forward_grid(images)

    def forward_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """The wrapped encoder's grid as tokens ``[B, h*w, grid_dim]``."""
        return self.encoder.forward_tokens(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The maximum of every grid channel over positions: ``[B, grid_dim]``."""
        return self.forward_grid(images).amax(dim=(2, 3))


def image_encoder_names() -> list[str]:
    """Names :func:`build_image_encoder` accepts."""
    return ["small_cnn", "vit", *resnet_names()]


def build_image_encoder(name: str, **kwargs: Any) -> ImageEncoder:
    """Build an image encoder by name: ``"small_cnn"``, ``"vit"`` or a ResNet such as
    ``"resnet50"``.

    Keyword arguments go to the encoder's constructor.
    ``build_image_encoder(**enc.config)`` rebuilds ``enc`` (with fresh weights).
    """
    if name == "small_cnn":
        return SmallCNN(**kwargs)
    if name == "vit":
        return ViTEncoder(**kwargs)
    if name in resnet_names():
        return ResNetEncoder(name, **kwargs)
    raise ValueError(
        f"unknown image encoder {name!r}; valid names: "
        f"{', '.join(image_encoder_names())}"
    )
