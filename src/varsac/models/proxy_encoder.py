"""The proxy encoder φ(c): a small convolutional net from the proxy image to one feature vector."""

from torch import Tensor, nn


def conv_block(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """3×3 convolution, group norm, ReLU (the paper's choice for convolutional layers)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.GroupNorm(min(8, out_channels), out_channels),
        nn.ReLU(inplace=True),
    )


class ProxyEncoder(nn.Module):
    """Encodes the proxy once per image.

    (B, C, P, P) proxy → (B, feature_dim) features; every stage halves the side.
    ``encode`` also gives the last stage's (B, map_channels, s, s) map, before it is
    flattened, for a VRNN that points at places on it (``MapPointer``).
    """

    def __init__(
        self,
        in_channels: int,
        proxy_size: int,
        channels: tuple[int, ...] = (32, 64, 128),
        feature_dim: int = 256,
    ) -> None:
        super().__init__()
        stages, width, side = [], in_channels, proxy_size
        for out in channels:
            stages.append(conv_block(width, out, stride=2))
            width, side = out, (side + 1) // 2
        self.features = nn.Sequential(*stages)
        self.project = nn.Sequential(
            nn.Linear(width * side * side, feature_dim),
            nn.LayerNorm(feature_dim),
            nn.ReLU(inplace=True),
        )
        self.feature_dim = feature_dim
        self.map_channels = width

    def forward(self, proxy: Tensor) -> Tensor:
        return self.encode(proxy)[0]

    def encode(self, proxy: Tensor) -> tuple[Tensor, Tensor]:
        """(B, C, P, P) proxy → (B, feature_dim) features and the (B, map_channels, s, s)
        map they are projected from."""
        feature_map = self.features(proxy)
        return self.project(feature_map.flatten(1)), feature_map
