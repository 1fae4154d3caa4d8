"""Looking: proxy → VRNN → crops → glimpses of the image (source) → class: what predicts.

``Saccading`` holds the parts and the look; two modules share it: ``Saccader``
(models/saccader.py), the LightningModule that trains, and ``SaccadeNetwork``
here, a plain ``nn.Module`` with the same parts under the same names, so it loads
a trained ``Saccader``'s state dict as it is. Prediction uses the latter and so
imports neither Lightning nor its metrics.
"""

from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from varsac.models.crop_classifier import CropClassifier
from varsac.models.map_pointer import CellDraw, MapPointer, cell_contrast
from varsac.models.proxy_encoder import ProxyEncoder
from varsac.models.spatial_transformer import (
    crop_boxes,
    crops_from_latents,
    jitter_crops,
    mirror_crops,
    mirror_images,
)
from varsac.models.vrnn import VRNN, Rollout
from varsac.tasks import Task


@dataclass
class Saccades:
    """One look at a batch: where the model looked, what it saw and what it decided.

    N is the batch size times the looks per image (``Saccading.saccade``).
    """

    log_probs: Tensor  # (N, K) class log-probabilities
    crops: Tensor  # (N, T, 3) scale, x, y in the normalised frame
    glimpses: Tensor  # (N, T, C, w, w)
    rollout: Rollout

    @property
    def boxes(self) -> Tensor:
        """(N, T, 4) glimpse boxes (x0, y0, x1, y1) as fractions of the image side."""
        return crop_boxes(self.crops)


class Saccading:
    """The parts of a saccade model and how it looks, for an ``nn.Module`` to mix in.

    ``add_parts`` registers the proxy encoder, the VRNN, the cropper, the crop
    classifier, in the closed loop φ_g (``glimpse_embedding``: a glimpse's features →
    the VRNN's cell input) and, for a VRNN with ``where`` = ``"map"`` or ``"cells"``, the
    ``map_pointer`` that picks the saccades' places on the proxy encoder's map.
    """

    proxy_encoder: ProxyEncoder
    vrnn: VRNN
    cropper: nn.Module
    crop_classifier: CropClassifier
    glimpse_embedding: nn.Module | None
    map_pointer: MapPointer | None
    min_scale: float
    max_scale: float

    def add_parts(
        self,
        proxy_encoder: ProxyEncoder,
        vrnn: VRNN,
        cropper: nn.Module,
        crop_classifier: CropClassifier,
        min_scale: float,
        max_scale: float,
    ) -> None:
        crops_from_latents(torch.zeros(1, 3), min_scale, max_scale)  # validates the bounds
        self.min_scale, self.max_scale = min_scale, max_scale
        self.proxy_encoder = proxy_encoder
        self.vrnn = vrnn
        self.cropper = cropper
        self.crop_classifier = crop_classifier
        self.glimpse_embedding = (
            nn.Sequential(nn.Linear(crop_classifier.feature_dim, vrnn.hidden_dim), nn.ReLU())
            if vrnn.closed_loop
            else None
        )
        self.map_pointer = (
            MapPointer(proxy_encoder.map_channels, vrnn.hidden_dim)
            if vrnn.where != "dense"
            else None
        )

    def saccade(
        self,
        images: Any,
        proxy: Tensor,
        sample: bool,
        elbo: bool = False,
        looks: int = 1,
        scale_bounds: Tensor | None = None,
        jitter: float = 0.0,
        flips: Tensor | None = None,
    ) -> Saccades:
        """Look at a batch: (B, C, P, P) proxy and the B images the cropper reads from.

        ``looks``: K rollouts per image (posterior samples, with ``sample``), run as one
        batch of N = B·K, image by image (row b·K + k is look k of image b); the proxy
        is encoded once per image and the cropper gets each image once, with its K·T
        crops. ``elbo``: also the rollout's KL and reconstruction terms, which only the
        loss needs (they run the VRNN's prior and proxy decoder at every step).

        ``scale_bounds``: float (B, 2), each image's own (min, max) crop scale (glimpses of
        one physical size on images of different sizes), instead of ``min_scale`` and
        ``max_scale``.

        ``jitter``: move each crop at random by up to that fraction of its half-side
        (``jitter_crops``; an augmentation for training, 0 elsewhere).

        ``flips``: (B, 2) booleans, look at each image mirrored left–right and/or top–bottom
        (``random_flips``; an augmentation for training). The policy sees the mirrored proxy
        and places its crops on the mirrored image; each glimpse is cut from the image as it
        is and mirrored the same way, so nothing is copied but the glimpses. The crops
        returned are on the image as it is.

        In the closed loop each glimpse is cut and encoded as soon as its latent is drawn,
        and fed back before the next; in the open loop all are cut at once afterwards.
        With ``where="cells"`` each glimpse's features reach the classifier times a/⊥a, a
        the probability of its cell (map_pointer.py): the same values, and the gradient
        that teaches the attention.
        """
        batch = proxy.shape[0]
        crops, glimpses, seen = [], [], []
        low, high = self.min_scale, self.max_scale
        if scale_bounds is not None:  # (N, 1, 1) each: a look's bounds are its image's
            check_scale_bounds(scale_bounds, batch)
            bounds = scale_bounds.to(proxy).repeat_interleave(looks, 0)[:, None, :, None]
            low, high = bounds[:, :, 0], bounds[:, :, 1]

        if flips is not None:
            proxy = mirror_images(proxy, flips)
            flips = flips.repeat_interleave(looks, 0)  # (N, 2)

        def look(latents: Tensor) -> Tensor:  # (N, n, latent_dim) → (N, n, F)
            steps = latents.shape[1]
            crop = jitter_crops(crops_from_latents(latents, low, high), jitter)
            if flips is not None:  # from the mirrored image's frame to the image's
                crop = mirror_crops(crop, flips)
            glimpse = self.cropper(images, crop.reshape(batch, looks * steps, 3))
            glimpse = glimpse.reshape(batch * looks, steps, *glimpse.shape[2:])  # (N, n, C, w, w)
            if flips is not None:
                glimpse = mirror_images(glimpse, flips)
            crops.append(crop)
            glimpses.append(glimpse)
            seen.append(self.crop_classifier.encode(glimpse))
            return seen[-1]

        features, feature_map = self.proxy_encoder.encode(proxy)
        features = features.repeat_interleave(looks, 0)  # (N, F)
        target = proxy.repeat_interleave(looks, 0) if elbo else None
        locate: Any = None
        if self.map_pointer is not None:
            keys = self.map_pointer.keys(feature_map).repeat_interleave(looks, 0)  # (N, A, s, s)
            if self.vrnn.where == "cells":
                prior = places = reach = None
                if self.vrnn.contrast_prior:  # (N, s·s) logits, (N, s·s, 2) peaks
                    logits, places = cell_contrast(proxy, keys.shape[-1])
                    prior = self.vrnn.contrast_prior * logits.repeat_interleave(looks, 0)
                    places = places.repeat_interleave(looks, 0)
                    reach = 2 / proxy.shape[-1]  # a proxy pixel: the peak is on the thing
                scales = (low, high) if scale_bounds is None else (low[:, 0], high[:, 0])
                inhibit = self.vrnn.inhibition_of_return
                locate = CellDraw(
                    self.map_pointer, keys, sample, scales, prior, places, reach, inhibit
                )
            else:  # (N, hidden) state → (N, 2) centre
                locate = partial(self.map_pointer.point, keys)
        if self.glimpse_embedding is None:
            rollout = self.vrnn(features, target, sample, locate=locate)
            look(rollout.latents)
        else:
            embedding = self.glimpse_embedding
            rollout = self.vrnn(
                features, target, sample, lambda z: embedding(look(z[:, None])[:, 0]), locate
            )
        seen_features = torch.cat(seen, 1)  # (N, T, F)
        if rollout.cell_log_prob is not None:  # × a/⊥a: 1, with ∇log a
            log_prob = rollout.cell_log_prob
            seen_features = seen_features * (log_prob - log_prob.detach()).exp()[..., None]
        log_probs = self.crop_classifier.classify(seen_features).log_softmax(dim=-1)
        return Saccades(log_probs, torch.cat(crops, 1), torch.cat(glimpses, 1), rollout)


def check_scale_bounds(bounds: Tensor, batch: int) -> None:
    """Raise ``ValueError`` unless ``bounds`` is (batch, 2) with 0 < min ≤ max ≤ 1 in each row."""
    if bounds.shape != (batch, 2):
        raise ValueError(f"scale_bounds must be ({batch}, 2), got {tuple(bounds.shape)}")
    low, high = bounds.unbind(1)
    if not ((low > 0) & (low <= high) & (high <= 1)).all():
        raise ValueError(f"scale_bounds need 0 < min ≤ max ≤ 1 in every row, got {bounds.tolist()}")


class SaccadeNetwork(Saccading, nn.Module):
    """A saccade model for prediction: ``Saccader``'s parts and look, without its training.

    Built from the same config values (``Saccader``'s other arguments are the loss's and
    the optimiser's), it loads a ``Saccader``'s state dict.
    """

    def __init__(
        self,
        proxy_encoder: ProxyEncoder,
        vrnn: VRNN,
        cropper: nn.Module,
        crop_classifier: CropClassifier,
        task: Task,
        min_scale: float = 0.2,
        max_scale: float = 0.5,
    ) -> None:
        super().__init__()
        self.task = task
        self.add_parts(proxy_encoder, vrnn, cropper, crop_classifier, min_scale, max_scale)
