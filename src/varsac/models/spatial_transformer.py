"""From a saccade latent to a glimpse: crop parameters and the spatial transformer.

Crops are (scale, x, y) in the normalised frame of ``affine_grid`` (the image
spans [-1, 1] on both axes, pixel edges included: ``align_corners=False``):
the glimpse covers the square of half-side ``scale`` centred on (x, y), so a
scale of 0.25 is a quarter of the image side.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from varsac.errors import ConfigError


def crops_from_latents(
    latents: Tensor, min_scale: float | Tensor, max_scale: float | Tensor
) -> Tensor:
    """Bound the first three latent coordinates smoothly into valid crops.

    (..., latent_dim) → (..., 3) as (scale, x, y), with
    scale = min + (max − min)·sigmoid(z₀) and centre = tanh(z₁,₂)·(1 − scale),
    so the crop stays inside the image and every parameter has a gradient. The bounds
    are numbers, or tensors that broadcast against (..., 1): one pair per image.
    """
    if not isinstance(min_scale, Tensor) and not 0 < min_scale <= max_scale <= 1:
        raise ValueError(f"need 0 < min_scale ≤ max_scale ≤ 1, got {min_scale}, {max_scale}")
    scale = min_scale + (max_scale - min_scale) * torch.sigmoid(latents[..., :1])
    centre = torch.tanh(latents[..., 1:3]) * (1 - scale)
    return torch.cat([scale, centre], dim=-1)


def jitter_crops(crops: Tensor, jitter: float) -> Tensor:
    """(..., 3) crops → the same crops, each centre moved at random by up to ``jitter``
    times the crop's half-side on each axis (uniformly), and kept inside the image.

    An augmentation for training: the classifier sees each thing at a new offset in
    every epoch. The move is a constant to the gradient, which reaches the centre as
    before.
    """
    if jitter < 0:
        raise ValueError(f"jitter must be ≥ 0, got {jitter}")
    if jitter == 0:
        return crops
    scale, centre = crops[..., :1], crops[..., 1:3]
    move = jitter * scale.detach() * (2 * torch.rand_like(centre) - 1)
    reach = 1 - scale.detach()
    return torch.cat([scale, (centre + move).clamp(-reach, reach)], dim=-1)


# the mirrorings a training rollout may look through: flips → axes (0 left–right, 1 top–bottom)
FLIPS = {"none": (), "horizontal": (0,), "both": (0, 1)}


def random_flips(batch: int, flips: str, device: torch.device | None = None) -> Tensor | None:
    """(batch, 2) booleans, mirror left–right and mirror top–bottom, each axis that ``flips``
    allows (``FLIPS``) drawn with probability ½; None for "none"."""
    if not FLIPS[flips]:
        return None
    drawn = torch.rand(batch, 2, device=device) < 0.5
    drawn[:, [axis for axis in (0, 1) if axis not in FLIPS[flips]]] = False
    return drawn


def mirror_images(images: Tensor, flips: Tensor) -> Tensor:
    """(N, ..., H, W) images, each mirrored as its row of the (N, 2) booleans ``flips`` says
    (left–right, then top–bottom)."""
    shape = (-1,) + (1,) * (images.dim() - 1)
    images = torch.where(flips[:, 0].view(shape), images.flip(-1), images)
    return torch.where(flips[:, 1].view(shape), images.flip(-2), images)


def mirror_crops(crops: Tensor, flips: Tensor) -> Tensor:
    """(N, ..., 3) crops placed on the images mirrored by the (N, 2) ``flips`` → the same
    crops on the images as they are (and back: the centre's x or y changes sign).

    A glimpse of the mirrored image is the glimpse of the mirrored crop, mirrored, since a
    crop's sample points are symmetric about its centre.
    """
    sign = 1 - 2 * flips.to(crops.dtype)  # (N, 2): -1 where mirrored
    sign = sign.view(sign.shape[0], *(1,) * (crops.dim() - 2), 2)
    return torch.cat([crops[..., :1], crops[..., 1:3] * sign], dim=-1)


def crop_boxes(crops: Tensor) -> Tensor:
    """(..., 3) crops → (..., 4) boxes (x0, y0, x1, y1) as fractions of the image side."""
    scale, centre = crops[..., :1], crops[..., 1:3]
    return torch.cat([(centre - scale + 1) / 2, (centre + scale + 1) / 2], dim=-1)


def sampling_grid(crops: Tensor, window: int) -> Tensor:
    """(B, T, 3) crops → (B, T, window, window, 2) sample points (x, y) in the normalised frame.

    Glimpse pixel i sits at the centre of cell i of the crop, exactly as
    ``affine_grid(..., align_corners=False)`` places it.
    """
    steps = (torch.arange(window, dtype=crops.dtype, device=crops.device) * 2 + 1) / window - 1
    scale, x, y = (crops[..., k, None, None] for k in range(3))
    grid_x = x + scale * steps.view(1, 1, 1, window)
    grid_y = y + scale * steps.view(1, 1, window, 1)
    return torch.stack(torch.broadcast_tensors(grid_x, grid_y), dim=-1)


class SpatialTransformer(nn.Module):
    """Bilinear glimpses of an in-memory image batch.

    (B, C, H, W) images and (B, T, 3) crops → (B, T, C, window, window) glimpses.
    Outside the image the glimpse reads zeros. All T glimpses of an image are
    sampled in one ``grid_sample`` call, so the image is never copied T times.
    """

    def __init__(self, window: int = 32) -> None:
        super().__init__()
        self.window = window

    def forward(self, images: Tensor, crops: Tensor) -> Tensor:
        if not isinstance(images, Tensor):
            raise ConfigError(
                f"the spatial transformer samples image tensors in memory, and the data gives "
                f"{type(images).__name__} of image files: choose model/cropper=lst, which "
                f"reads them"
            )
        batch, steps = crops.shape[:2]
        grid = sampling_grid(crops, self.window)  # (B, T, w, w, 2)
        glimpses = F.grid_sample(
            images,
            grid.reshape(batch, steps * self.window, self.window, 2),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=False,
        )  # (B, C, T·w, w)
        glimpses = glimpses.view(batch, -1, steps, self.window, self.window)
        return glimpses.transpose(1, 2)
