"""Networks of the learned enhancers: a compact U-Net generator and a PatchGAN discriminator.

The generator predicts a residual in logit space, ``y = sigmoid(logit(x) + r(x))``, with the last
layer initialised to zero: an untrained generator is the identity, output stays in (0, 1), and
training only has to learn the change. BatchNorm (not InstanceNorm) keeps inference independent
of per-tile statistics, so tiled and whole-frame outputs agree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from usher2.inference import SplitSkipConv

__all__ = [
    "GeneratorConfig",
    "PatchDiscriminator",
    "UNetGenerator",
    "split_skip_convs",
    "ssim_loss",
    "ssim_torch",
]

_LOGIT_EPS = 1e-3


@dataclass(frozen=True)
class GeneratorConfig:
    """Architecture of :class:`UNetGenerator`, saved next to its weights.

    Attributes:
        base_channels: Channels at full resolution; doubled at each level.
        depth: Number of 2x downsamplings; inputs are padded to a multiple of ``2**depth``.
        max_channels: Cap on channels per level.
    """

    base_channels: int = 16
    depth: int = 4
    max_channels: int = 128

    def __post_init__(self) -> None:
        for name in ("base_channels", "depth", "max_channels"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"GeneratorConfig.{name} must be a positive integer, got {v!r}")
        if self.depth > 7:
            raise ValueError(f"GeneratorConfig.depth must be <= 7, got {self.depth}")

    @property
    def multiple(self) -> int:
        """Input sides must be a multiple of this (``2**depth``)."""
        return 2**self.depth

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def _conv_block(cin: int, cout: int, *, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.LeakyReLU(0.2, inplace=True),
    )


def split_skip_convs(generator: UNetGenerator) -> UNetGenerator:
    """``generator`` (changed in place: pass an inference copy) with each up block a
    :class:`SplitSkipConv`. Returns it."""
    h_channels = generator.bottleneck[0].out_channels
    for k, block in enumerate(generator.up):
        if isinstance(block, SplitSkipConv):
            return generator
        generator.up[k] = SplitSkipConv(block, h_channels)
        h_channels = block[0].out_channels
    return generator


class UNetGenerator(nn.Module):
    """Compact U-Net: ``(B, 1, H, W)`` in [0, 1] -> ``(B, 1, H, W)`` in (0, 1).

    ``H`` and ``W`` must be multiples of ``config.multiple``; the enhancer wrapper pads.

    Example:
        >>> import torch
        >>> g = UNetGenerator(GeneratorConfig(base_channels=8, depth=2)).eval()
        >>> x = torch.rand(2, 1, 32, 36)
        >>> bool(torch.allclose(g(x), x.clamp(1e-3, 1 - 1e-3), atol=1e-5))  # identity before training
        True
    """

    def __init__(self, config: GeneratorConfig | None = None) -> None:
        super().__init__()
        self.config = config or GeneratorConfig()
        c = self.config
        chans = [min(c.base_channels * 2**i, c.max_channels) for i in range(c.depth + 1)]
        self.stem = _conv_block(1, chans[0])
        self.down = nn.ModuleList(_conv_block(chans[i], chans[i + 1], stride=2) for i in range(c.depth))
        self.bottleneck = _conv_block(chans[-1], chans[-1])
        self.up = nn.ModuleList(_conv_block(chans[i + 1] + chans[i], chans[i]) for i in reversed(range(c.depth)))
        self.head = nn.Conv2d(chans[0], 1, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.config.multiple
        if x.ndim != 4 or x.shape[1] != 1 or x.shape[2] % m or x.shape[3] % m:
            raise ValueError(f"UNetGenerator expects (B, 1, H, W) with H, W multiples of {m}, got {tuple(x.shape)}")
        skips = [self.stem(x)]
        for down in self.down:
            skips.append(down(skips[-1]))
        h = self.bottleneck(skips.pop())
        for up in self.up:
            skip = skips.pop()
            h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            h = up(h, skip) if isinstance(up, SplitSkipConv) else up(torch.cat([h, skip], dim=1))
        return torch.sigmoid(torch.logit(x.clamp(_LOGIT_EPS, 1 - _LOGIT_EPS)) + self.head(h))


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator (pix2pix): one real/fake logit per overlapping patch.

    Args:
        in_channels: 2 for a conditional (input, output) pair; more with a lesion-mask channel.
        base_channels: Channels of the first layer.
        n_layers: Stride-2 layers; 3 gives 70 x 70 patches as in pix2pix.
    """

    def __init__(self, *, in_channels: int = 2, base_channels: int = 32, n_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, base_channels, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        c = base_channels
        for i in range(1, n_layers):
            c_next = min(base_channels * 2**i, 8 * base_channels)
            layers += [nn.Conv2d(c, c_next, 4, 2, 1, bias=False), nn.BatchNorm2d(c_next), nn.LeakyReLU(0.2, True)]
            c = c_next
        c_next = min(c * 2, 8 * base_channels)
        layers += [nn.Conv2d(c, c_next, 4, 1, 1, bias=False), nn.BatchNorm2d(c_next), nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(c_next, 1, 4, 1, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _gaussian_window(size: int = 11, sigma: float = 1.5, *, device=None, dtype=None) -> torch.Tensor:
    r = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim_torch(x: torch.Tensor, y: torch.Tensor, *, data_range: float = 1.0) -> torch.Tensor:
    """Mean SSIM per image with Wang et al. settings, differentiable.

    11 x 11 Gaussian window (σ = 1.5), K1 = 0.01, K2 = 0.03, population statistics, averaged over
    the valid region; this equals scikit-image's ``structural_similarity(gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False)``.

    Args:
        x: ``(B, 1, H, W)``.
        y: ``(B, 1, H, W)``.
        data_range: Explicit data range.

    Returns:
        ``(B,)`` SSIM values.
    """
    w = _gaussian_window(device=x.device, dtype=x.dtype)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = F.conv2d(x, w), F.conv2d(y, w)
    sxx = F.conv2d(x * x, w) - mx * mx
    syy = F.conv2d(y * y, w) - my * my
    sxy = F.conv2d(x * y, w) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.mean(dim=(1, 2, 3))


def ssim_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``1 - SSIM``, averaged over the batch."""
    return 1.0 - ssim_torch(x, y).mean()
