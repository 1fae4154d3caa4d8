"""The variational recurrent network that decides where to look (docs/design.md §3).

At every step t, with h the recurrent state and φ(c) the proxy features:

    prior      p(z_t | h)          diagonal Gaussian (or the fixed N(0, I): ``prior="standard"``)
    posterior  q(z_t | φ(c), h)    diagonal Gaussian, learnt or fixed variance
    decoder    p(c | φ_z(z_t), h)  reconstructs the proxy (Bernoulli or Gaussian), area-
                                   downsampled to reconstruction_size² if that is smaller
    cell       h ← GRU([φ(c), φ_z(z_t)], h)                    open loop (the paper's)
               h ← GRU([φ(c), φ_z(z_t), φ_g(g_t)], h)          closed loop

In the closed loop, φ_g(g_t) is the embedding of the glimpse z_t pointed at
(``look``): what the model saw decides where it looks next, as in RAM and
DRAM. Without it each step sees only the proxy and its own earlier latents,
which is all there is to go on only while the proxy shows the objects.

With ``where="map"`` the posterior's mean of the centre coordinates (z₁, z₂) is
atanh of the point that attention over the proxy encoder's map picks given h
(``locate``: map_pointer.py), not the dense layer's: the crop's centre is then that
point times (1 − scale). Its scale, its spread and the other coordinates stay the
dense layer's. With ``where="cells"`` ``locate`` draws a cell of that map instead, and
z₁, z₂ place the crop inside it: the crop's centre (the margin included) is the cell's
centre + half its side · tanh(z₁, z₂).
``contrast_prior`` = κ > 0 adds κ · log of each cell's contrast on the proxy to that draw's
logits and puts the cell's place at its peak instead of its centre
(map_pointer.cell_contrast), so that it starts on what there is to see.
``inhibition_of_return`` (with ``where="cells"``) takes, with each glimpse, the cells whose
places it covers, so that a thing on the border of two cells is not looked at twice.

The latent z_t ∈ R^latent_dim is what the saccade is made of: its first three
coordinates become the crop's scale and centre (see spatial_transformer.py).
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Bernoulli, Independent, Normal, kl_divergence

from varsac.errors import check_at_least

# (B, latent_dim) latent → (B, hidden_dim) embedding of the glimpse it points at
Look = Callable[[Tensor], Tensor]
# (B, hidden_dim) recurrent state → (B, 2) the centre (x, y) in (−1, 1) it points at on the proxy
Locate = Callable[[Tensor], Tensor]
PRIORS = ("learnt", "standard")
WHERES = ("dense", "map", "cells")


class DrawCell(Protocol):
    """``where="cells"``'s locate (map_pointer.CellDraw): (B, hidden_dim) state → the (B, 2)
    place (x, y) of the cell drawn and the (B,) log-probability of drawing it; ``inside``:
    a (B, latent_dim) latent and that place → the latent whose crop is at the place plus
    the offset z₁, z₂ make."""

    def __call__(self, hidden: Tensor) -> tuple[Tensor, Tensor]: ...

    def inside(self, latent: Tensor, place: Tensor) -> Tensor: ...


@dataclass
class Rollout:
    """What the VRNN produced over T steps."""

    latents: Tensor  # (B, T, latent_dim)
    # the ELBO's terms, None for a rollout without the proxy (inference skips the prior and
    # the decoder, which only the loss needs)
    kl: Tensor | None  # (B, T) KL(q_t ‖ p_t) in nats
    reconstruction_nll: Tensor | None  # (B, T) −log p(c | z_t, h_{t-1}) in nats
    # (B, T) log q(z_t | …) of the latents drawn, the latents held fixed: the score that a
    # policy gradient weighs; None unless the latents were sampled with the ELBO's terms
    log_posterior: Tensor | None = None
    # (B, T) where="cells": the log-probability of each step's cell, with its gradient
    cell_log_prob: Tensor | None = None


def mlp(in_features: int, hidden: int, out_features: int) -> nn.Sequential:
    """Linear → layer norm → ReLU → linear.

    Layer norm, not the paper's batch norm: these layers run once per step, and
    batch statistics pooled over steps differ from those of any one step, so a
    batch-normed recurrent net behaves differently in training and evaluation.
    """
    return nn.Sequential(
        nn.Linear(in_features, hidden),
        nn.LayerNorm(hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, out_features),
    )


class GaussianHead(nn.Module):
    """(B, in_features) → diagonal Normal over R^latent_dim, softplus standard deviation.

    With ``fixed_variance`` set, the standard deviation is that constant and only
    the mean is learnt (the paper's exploration ablation).
    """

    def __init__(
        self, in_features: int, hidden: int, latent_dim: int, fixed_variance: float | None = None
    ) -> None:
        super().__init__()
        if fixed_variance is not None and fixed_variance <= 0:
            raise ValueError(f"fixed_variance must be positive or null, got {fixed_variance}")
        self.latent_dim = latent_dim
        self.fixed_std = None if fixed_variance is None else math.sqrt(fixed_variance)
        outputs = latent_dim if self.fixed_std is not None else 2 * latent_dim
        self.net = mlp(in_features, hidden, outputs)

    def forward(self, features: Tensor) -> Normal:
        # No argument validation: a NaN must reach the loss, whose guard names the step.
        out = self.net(features)
        if self.fixed_std is not None:
            return Normal(out, torch.full_like(out, self.fixed_std), validate_args=False)
        mean, raw_std = out.chunk(2, dim=-1)
        return Normal(mean, nn.functional.softplus(raw_std) + 1e-4, validate_args=False)


class ProxyDecoder(nn.Module):
    """(B, in_features) → a distribution over the (C, P, P) proxy.

    A dense layer to a 4×4 map of ``width`` channels, then conv-transpose layers
    that double the side and halve the channels up to P (P a power of two, ≥ 4).
    ``likelihood`` is ``bernoulli`` for proxies in [0, 1] or ``gaussian``
    (mean and a learnt per-channel scale).
    """

    def __init__(
        self,
        in_features: int,
        out_channels: int,
        proxy_size: int,
        width: int = 32,
        likelihood: str = "bernoulli",
    ) -> None:
        super().__init__()
        doublings = math.log2(proxy_size / 4)
        if proxy_size < 4 or not doublings.is_integer():
            raise ValueError(f"proxy_size must be a power of two ≥ 4, got {proxy_size}")
        if likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"likelihood must be 'bernoulli' or 'gaussian', got {likelihood!r}")
        self.likelihood = likelihood
        self.width = width
        self.dense = nn.Linear(in_features, width * 16)
        layers: list[nn.Module] = []
        channels = width
        for _ in range(int(doublings)):
            layers += [
                nn.GroupNorm(min(8, channels), channels),
                nn.ReLU(inplace=True),
                nn.ConvTranspose2d(channels, max(channels // 2, 8), 4, stride=2, padding=1),
            ]
            channels = max(channels // 2, 8)
        layers += [
            nn.GroupNorm(min(8, channels), channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, out_channels, 1),
        ]
        self.upsample = nn.Sequential(*layers)
        if likelihood == "gaussian":
            self.log_scale = nn.Parameter(torch.zeros(out_channels, 1, 1))

    def forward(self, features: Tensor) -> Independent:
        out = self.upsample(self.dense(features).view(-1, self.width, 4, 4))
        if self.likelihood == "bernoulli":
            # The proxy is grey-level, not binary: the Bernoulli likelihood is the usual
            # cross-entropy relaxation, so its {0, 1} support check is switched off.
            return Independent(Bernoulli(logits=out, validate_args=False), 3, validate_args=False)
        scale = self.log_scale.exp().expand_as(out)
        return Independent(Normal(out, scale, validate_args=False), 3, validate_args=False)


class VRNN(nn.Module):
    """Rolls out T saccade latents from the proxy features.

    (B, feature_dim) proxy features and the (B, C, P, P) proxy → Rollout.
    With ``sample`` z_t is a reparameterised posterior sample; otherwise the posterior mean.
    Without the proxy (None) only the posterior runs: the latents come out, the ELBO's
    terms (the prior's KL and the decoder's reconstruction) are not computed.

    ``prior="learnt"`` (the paper's) conditions the prior on h and learns it with the
    posterior, so the KL never pulls the saccades anywhere; ``"standard"`` fixes it to
    N(0, I), so that β·KL pulls every latent towards the image's centre and a middling
    scale and keeps its spread (the crops' tanh and sigmoid unsaturated, and exploring).
    ``where="dense"`` (the paper's) reads the saccade's centre off the features with the
    rest of the posterior; ``"map"`` takes it from ``locate``, and ``"cells"`` places the
    crop inside the cell that ``locate`` draws (the module's docstring).
    """

    def __init__(
        self,
        feature_dim: int,
        proxy_channels: int,
        proxy_size: int,
        steps: int = 4,
        latent_dim: int = 3,
        hidden_dim: int = 256,
        fixed_variance: float | None = None,
        likelihood: str = "bernoulli",
        closed_loop: bool = False,
        reconstruction_size: int | None = None,
        prior: str = "learnt",
        where: str = "dense",
        contrast_prior: float = 0.0,
        inhibition_of_return: bool = False,
    ) -> None:
        super().__init__()
        if contrast_prior < 0 or (contrast_prior and where != "cells"):
            raise ValueError(
                f"contrast_prior must be 0, or positive with where=cells, got {contrast_prior} "
                f"with where={where}"
            )
        if inhibition_of_return and where != "cells":
            raise ValueError(f"inhibition_of_return needs where=cells, got where={where}")
        self.contrast_prior = contrast_prior
        self.inhibition_of_return = inhibition_of_return
        if prior not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}, got {prior!r}")
        if where not in WHERES:
            raise ValueError(f"where must be one of {WHERES}, got {where!r}")
        self.where = where
        reconstruction_size = reconstruction_size or proxy_size
        if reconstruction_size > proxy_size:
            raise ValueError(
                f"reconstruction_size must be at most proxy_size={proxy_size}, "
                f"got {reconstruction_size}"
            )
        check_at_least(
            steps=(steps, 1),
            hidden_dim=(hidden_dim, 1),
            feature_dim=(feature_dim, 1),
            latent_dim=(latent_dim, 3),  # a crop's scale, x and y come first
        )
        self.steps = steps
        self.hidden_dim = hidden_dim
        self.prior = GaussianHead(hidden_dim, hidden_dim, latent_dim) if prior == "learnt" else None
        self.latent_dim = latent_dim
        self.posterior = GaussianHead(
            feature_dim + hidden_dim, hidden_dim, latent_dim, fixed_variance
        )
        self.embed_latent = nn.Sequential(nn.Linear(latent_dim, hidden_dim), nn.ReLU(inplace=True))
        # The decoder reconstructs the proxy area-downsampled to reconstruction_size², so that
        # its cost (most of a training step's at a 128² proxy) need not grow with the proxy.
        self.reconstruction_size = reconstruction_size
        self.reconstructed_values = proxy_channels * reconstruction_size**2
        self.decoder = ProxyDecoder(
            2 * hidden_dim, proxy_channels, reconstruction_size, likelihood=likelihood
        )
        self.closed_loop = closed_loop
        seen = hidden_dim if closed_loop else 0
        self.cell = nn.GRUCell(feature_dim + hidden_dim + seen, hidden_dim)

    def forward(
        self,
        features: Tensor,
        proxy: Tensor | None,
        sample: bool,
        look: Look | None = None,
        locate: Locate | DrawCell | None = None,
    ) -> Rollout:
        """``proxy``: the (B, C, P, P) proxy that the ELBO's decoder reconstructs, or None
        for the latents alone. ``look`` (the closed loop's): (B, latent_dim) latent →
        (B, hidden_dim) embedding of the glimpse it points at, called once per step, in
        order. ``locate``: ``where="map"``'s (B, hidden_dim) state → (B, 2) centre, or
        ``where="cells"``'s ``DrawCell``."""
        if self.closed_loop and look is None:
            raise ValueError("a closed-loop VRNN needs look")
        if self.where != "dense" and locate is None:
            raise ValueError(f"a VRNN with where={self.where} needs locate")
        if self.where == "dense" and locate is not None:
            raise ValueError("locate is for where=map or cells, and this VRNN has where=dense")
        hidden = features.new_zeros(features.shape[0], self.hidden_dim)
        if proxy is not None and proxy.shape[-1] != self.reconstruction_size:
            proxy = F.adaptive_avg_pool2d(proxy, self.reconstruction_size)  # area-downsampled
        latents, kls, nlls, scores, cell_log_probs = [], [], [], [], []
        for _ in range(self.steps):
            posterior = self.posterior(torch.cat([features, hidden], dim=-1))
            if self.where == "map":
                posterior = centred_on(posterior, locate(hidden))
            drawn = posterior.rsample() if sample else posterior.mean
            latent = drawn
            if self.where == "cells":
                place, cell_log_prob = locate(hidden)
                latent = locate.inside(drawn, place)
                cell_log_probs.append(cell_log_prob)
            embedded = self.embed_latent(latent)
            latents.append(latent)
            if proxy is not None:
                reconstruction = self.decoder(torch.cat([embedded, hidden], dim=-1))
                kls.append(kl_divergence(posterior, self.prior_at(hidden)).sum(-1))
                nlls.append(-reconstruction.log_prob(proxy))
                score = posterior.log_prob(drawn.detach()).sum(-1)
                scores.append(score + cell_log_prob if self.where == "cells" else score)
            inputs = (
                [features, embedded, look(latent)] if self.closed_loop else [features, embedded]
            )
            hidden = self.cell(torch.cat(inputs, dim=-1), hidden)
        cells = torch.stack(cell_log_probs, 1) if cell_log_probs else None
        if proxy is None:
            return Rollout(torch.stack(latents, 1), None, None, cell_log_prob=cells)
        log_posterior = torch.stack(scores, 1) if sample else None
        return Rollout(
            torch.stack(latents, 1), torch.stack(kls, 1), torch.stack(nlls, 1), log_posterior, cells
        )

    def prior_at(self, hidden: Tensor) -> Normal:
        """p(z_t | h): the learnt prior's, or N(0, I)."""
        if self.prior is None:
            zeros = hidden.new_zeros(hidden.shape[0], self.latent_dim)
            return Normal(zeros, torch.ones_like(zeros), validate_args=False)
        return self.prior(hidden)


def centred_on(posterior: Normal, centre: Tensor) -> Normal:
    """``posterior`` with the mean of z₁ and z₂ set to atanh(centre), (B, 2) in (−1, 1), so
    that tanh(z) (the crop's centre before the (1 − scale) margin) is the point itself."""
    mean = posterior.mean
    mean = torch.cat([mean[..., :1], torch.atanh(centre), mean[..., 3:]], dim=-1)
    return Normal(mean, posterior.stddev, validate_args=False)
