"""The crop classifier: a fully convolutional net over each glimpse, pooled over glimpses."""

import torch
from torch import Tensor, nn

from varsac.models.proxy_encoder import conv_block

POOLINGS = ("mean", "max", "sum")
# Glimpses encoded at a time without gradients. On a CPU the activations of a few hundred
# 64² glimpses overflow the caches: 816 at once ran at 34 ms per 102, chunks of 128 at 14.5
# (docs/benchmarks.md, issue 15). With gradients the whole batch goes at once.
INFERENCE_CHUNK = 128


class CropClassifier(nn.Module):
    """Classifies an image from its glimpses.

    (B, T, C, w, w) glimpses → (B, num_classes) logits. Each glimpse goes
    through the same convolutional stages (each halving the side) and a
    spatial average pool; the T
    feature vectors are pooled (mean, max or sum) and a dense head classifies.
    Any window size works, the full image included (the full-image baseline is
    this net with T = 1).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        channels: tuple[int, ...] = (32, 64, 128, 256),
        hidden: int = 256,
        glimpse_pooling: str = "max",
    ) -> None:
        super().__init__()
        if glimpse_pooling not in POOLINGS:
            raise ValueError(f"glimpse_pooling must be one of {POOLINGS}, got {glimpse_pooling!r}")
        self.glimpse_pooling = glimpse_pooling
        stages, width = [], in_channels
        for out in channels:
            stages.append(conv_block(width, out, stride=2))
            width = out
        self.features = nn.Sequential(*stages, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        # Layer norm: spatially pooled features vary little between images, and batch
        # norm's running statistics then lag them by more than their spread.
        self.head = nn.Sequential(
            nn.Linear(width, hidden),
            nn.LayerNorm(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

        self.feature_dim = width

    def forward(self, glimpses: Tensor) -> Tensor:
        return self.classify(self.encode(glimpses))

    def encode(self, glimpses: Tensor) -> Tensor:
        """(B, T, C, w, w) glimpses → (B, T, feature_dim) features, each glimpse alone."""
        batch, steps = glimpses.shape[:2]
        flat = glimpses.flatten(0, 1)
        if torch.is_grad_enabled() or len(flat) <= INFERENCE_CHUNK:
            return self.features(flat).view(batch, steps, -1)
        chunks = [self.features(chunk) for chunk in flat.split(INFERENCE_CHUNK)]
        return torch.cat(chunks).view(batch, steps, -1)

    def classify(self, features: Tensor) -> Tensor:
        """(B, T, feature_dim) glimpse features → (B, num_classes) logits."""
        if self.glimpse_pooling == "max":
            pooled = features.amax(dim=1)
        elif self.glimpse_pooling == "sum":
            pooled = features.sum(dim=1)
        else:
            pooled = features.mean(dim=1)
        return self.head(pooled)
