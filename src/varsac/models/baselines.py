"""The paper's ResNet-18 baselines, which look at the whole image: resized, or tile by tile.

``ResNetClassifier`` resizes the whole image to one ResNet-18 input.
``TiledResNetClassifier`` covers the full-resolution image with a grid of tiles
and classifies the sum of their features, y = f(Σᵢ g(xᵢ)): g a ResNet-18 per
tile, f a small MLP. Both read their images through varsac.image_source, so they
take in-memory tensors and image sources (pyramid TIFFs) alike. Tiles are read
one chunk at a time, so inference holds one chunk of pixels at a time;
with ``checkpoint=True`` training keeps only each chunk's features and runs the
chunk again in the backward pass, trading time for memory as the paper did.
``tile_batch=None`` with ``checkpoint=False`` is the paper's naive baseline: all
tiles of a batch in one pass.
"""

from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from functools import partial

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from varsac.errors import check_at_least
from varsac.image_source import Image, Images, full_size, read_full_resolution, resized
from varsac.models.classifier import ImageClassifier, OptimizerFactory, SchedulerFactory
from varsac.models.resnet import ResNet18
from varsac.tasks import Task

READ_THREADS = 8  # threads reading the tiles of a chunk from the image sources


class ResNetClassifier(ImageClassifier):
    """The full-image baseline: the image resized to input_size², ResNet-18, a linear layer.

    Tensor images (B, C, H, W) are resized bilinearly with antialiasing (not at
    all when ``input_size`` is None); image sources are read at input_size²
    (``read_proxy``), which needs ``input_size``.
    """

    def __init__(
        self,
        task: Task,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        in_channels: int = 3,
        input_size: int | None = 224,
    ) -> None:
        super().__init__(task, optimizer, scheduler)
        if input_size is not None:
            check_at_least(input_size=(input_size, 1))
        self.input_size = input_size
        self.backbone = ResNet18(in_channels)
        self.head = nn.Linear(ResNet18.feature_dim, task.num_classes)

    def forward(self, images: Images) -> Tensor:
        """(B, K) class log-probabilities of images resized to input_size²."""
        inputs = resized(images, self.input_size).to(self.device)
        return self.head(self.backbone(inputs)).log_softmax(dim=-1)


def tile_origins(side: int, tile_size: int, tiles_per_side: int) -> list[int]:
    """The first pixels of ``tiles_per_side`` tiles of ``tile_size`` covering ``side`` pixels.

    Evenly spaced, round(i · (side − tile_size) / (tiles_per_side − 1)): the first
    tile starts at 0, the last ends at ``side``, and neighbours overlap by as
    little as the rounding allows (12 tiles of 224 cover 2528 with 14 or 15
    pixels of overlap).
    """
    check_at_least(tile_size=(tile_size, 1), tiles_per_side=(tiles_per_side, 1))
    if side < tile_size:
        raise ValueError(f"the image side of {side} pixels is smaller than the tile of {tile_size}")
    if tiles_per_side * tile_size < side:
        raise ValueError(
            f"{tiles_per_side} tiles of {tile_size} pixels cannot cover a side of {side}: "
            f"use at least {-(-side // tile_size)} tiles per side"
        )
    if tiles_per_side == 1:
        return [0]
    spacing = (side - tile_size) / (tiles_per_side - 1)
    return [round(i * spacing) for i in range(tiles_per_side)]


def tile_corners(
    width: int, height: int, tile_size: int, tiles_per_side: int
) -> list[tuple[int, int]]:
    """(left, top) of the tiles_per_side² tiles covering a width × height image, row by row."""
    lefts = tile_origins(width, tile_size, tiles_per_side)
    tops = tile_origins(height, tile_size, tiles_per_side)
    return [(left, top) for top in tops for left in lefts]


def read_tiles(
    tiles: Sequence[tuple[Image, int, int]], tile_size: int, pool: Executor | None = None
) -> Tensor:
    """Float (N, C, tile_size, tile_size): N tiles given as (image, left, top).

    Reads run on ``pool`` when given (image sources release the GIL while they decode).
    """
    images, lefts, tops = zip(*tiles, strict=True)
    read = partial(read_full_resolution, width=tile_size, height=tile_size)
    each = pool.map if pool is not None else map
    return torch.stack(list(each(read, images, lefts, tops)))


@contextmanager
def batch_norm_statistics_kept(module: nn.Module) -> Iterator[None]:
    """Undo what the block does to the running statistics of ``module``'s batch norms.

    A checkpointed chunk runs forward twice in training: the second run, in the
    backward pass, must not update the running means and variances again.
    """
    saved = [
        (buffer, buffer.clone())
        for layer in module.modules()
        if isinstance(layer, nn.BatchNorm2d)
        for buffer in layer.buffers(recurse=False)
    ]
    try:
        yield
    finally:
        for buffer, value in saved:
            buffer.copy_(value)


class TiledResNetClassifier(ImageClassifier):
    """The tiled baseline y = f(Σᵢ g(xᵢ)) over tiles_per_side² tiles of the full-resolution image.

    g: ResNet-18, float (N, C, tile_size, tile_size) tiles → (N, 512) features;
    f: Linear(512, hidden) → ReLU → Linear(hidden, K) of the per-image sum.
    The tiles of a batch go through g ``tile_batch`` at a time (which is also
    the batch-norm batch; None: all of them at once), read from the pyramids
    chunk by chunk on a thread pool. ``checkpoint``: recompute each chunk's
    activations in the backward pass instead of keeping them
    (``torch.utils.checkpoint``, non-reentrant), so training memory is the chunk
    outputs plus one chunk's activations.
    """

    def __init__(
        self,
        task: Task,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        in_channels: int = 3,
        tile_size: int = 224,
        tiles_per_side: int = 12,
        hidden: int = 256,
        checkpoint: bool = False,
        tile_batch: int | None = 16,
    ) -> None:
        super().__init__(task, optimizer, scheduler)
        check_at_least(tile_size=(tile_size, 1), tiles_per_side=(tiles_per_side, 1))
        if tile_batch is not None:  # None: all tiles at once
            check_at_least(tile_batch=(tile_batch, 1))
        self.tile_size = tile_size
        self.tiles_per_side = tiles_per_side
        self.checkpoint_chunks = checkpoint
        self.tile_batch = tile_batch
        self.tile_encoder = ResNet18(in_channels)
        self.head = nn.Sequential(
            nn.Linear(ResNet18.feature_dim, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, task.num_classes),
        )

    def tile_corners_of(self, image: Image) -> list[tuple[int, int]]:
        """(left, top) of this image's tiles, row by row."""
        return tile_corners(*full_size(image), self.tile_size, self.tiles_per_side)

    def encode_tiles(self, tiles: Tensor) -> Tensor:
        """g: (N, C, tile_size, tile_size) tiles → (N, 512), checkpointed when asked (with grad)."""
        if not (self.checkpoint_chunks and torch.is_grad_enabled()):
            return self.tile_encoder(tiles)
        return checkpoint(
            self.tile_encoder,
            tiles,
            use_reentrant=False,
            context_fn=lambda: (nullcontext(), batch_norm_statistics_kept(self.tile_encoder)),
        )

    def summed_tile_features(self, images: Images) -> Tensor:
        """Σᵢ g(xᵢ) over each image's tiles: (B, 512)."""
        tiles = [(image, *corner) for image in images for corner in self.tile_corners_of(image)]
        chunk_features = []
        step = self.tile_batch or len(tiles)
        with ThreadPoolExecutor(READ_THREADS) as pool:
            for start in range(0, len(tiles), step):
                chunk = read_tiles(tiles[start : start + step], self.tile_size, pool)
                chunk_features.append(self.encode_tiles(chunk.to(self.device)))
        features = torch.cat(chunk_features)  # (B · tiles_per_side², 512), image by image
        return features.view(len(images), -1, ResNet18.feature_dim).sum(dim=1)

    def forward(self, images: Images) -> Tensor:
        """(B, K) class log-probabilities."""
        return self.head(self.summed_tile_features(images)).log_softmax(dim=-1)
