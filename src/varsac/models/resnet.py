"""ResNet-18 (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016).

The feature extractor of the paper's baselines: a 7×7 stride-2 stem and a 3×3
stride-2 max-pool, four stages of two basic blocks (widths 64, 128, 256, 512;
strides 1, 2, 2, 2), then global average pooling to 512 features. With a
1000-way linear head it has the 11 689 512 parameters of the ImageNet model.
"""

from torch import Tensor, nn

STAGE_WIDTHS = (64, 128, 256, 512)
STAGE_STRIDES = (1, 2, 2, 2)
BLOCKS_PER_STAGE = 2


class BasicBlock(nn.Module):
    """Two 3×3 conv–BN layers plus a shortcut: relu(F(x) + shortcut(x)).

    (N, in_channels, H, W) → (N, out_channels, H / stride, W / stride). The
    shortcut is the identity when shapes agree, else a 1×1 strided conv and BN
    (the projection shortcut, option B of the paper).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        if stride == 1 and in_channels == out_channels:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        residual = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(residual + self.shortcut(x))


class ResNet18(nn.Module):
    """(N, in_channels, H, W) images → (N, 512) features, globally average-pooled.

    Any H, W of at least 32 keep a spatial extent through the five halvings
    (224² ends at 7², 100² at 4²).
    """

    feature_dim = STAGE_WIDTHS[-1]

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, STAGE_WIDTHS[0], 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(STAGE_WIDTHS[0]),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        stages = []
        width_in = STAGE_WIDTHS[0]
        for width, stride in zip(STAGE_WIDTHS, STAGE_STRIDES, strict=True):
            blocks = [BasicBlock(width_in, width, stride)]
            blocks += [BasicBlock(width, width, 1) for _ in range(BLOCKS_PER_STAGE - 1)]
            stages.append(nn.Sequential(*blocks))
            width_in = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.stages(self.stem(x))).flatten(1)
