"""The saccade model: proxy → VRNN → crops → glimpses → class (Eq. 5 of the paper)."""

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from varsac.models.classifier import Batch, ImageClassifier, OptimizerFactory, SchedulerFactory
from varsac.models.crop_classifier import CropClassifier
from varsac.models.proxy_encoder import ProxyEncoder
from varsac.models.spatial_transformer import crop_boxes, crops_from_latents
from varsac.models.vrnn import VRNN, Rollout
from varsac.tasks import Task

OBJECTIVES = ("sum", "product")
RECONSTRUCTIONS = ("sum", "mean")


@dataclass
class Saccades:
    """One look at a batch: where the model looked, what it saw and what it decided."""

    log_probs: Tensor  # (B, K) class log-probabilities
    crops: Tensor  # (B, T, 3) scale, x, y in the normalised frame
    glimpses: Tensor  # (B, T, C, w, w)
    rollout: Rollout

    @property
    def boxes(self) -> Tensor:
        """(B, T, 4) glimpse boxes (x0, y0, x1, y1) as fractions of the image side."""
        return crop_boxes(self.crops)


class Saccader(ImageClassifier):
    """Variational saccading.

    loss = classification NLL + β · Σ_t [reconstruction NLL_t + KL_t]   (objective="sum")
    loss = classification NLL · β · Σ_t [...]      (objective="product", the authors' code)

    The reconstruction NLL of a step is summed over the proxy's C·P·P values
    (``reconstruction="sum"``, the paper's), so at one β it grows with the proxy; with
    ``reconstruction="mean"`` it is their mean, in nats per value, and β weighs it the
    same at every proxy size.

    Training samples each z_t from the posterior. Evaluation uses the posterior
    mean, or with ``eval_samples`` = K > 0 averages the class probabilities of
    K posterior samples.
    """

    def __init__(
        self,
        proxy_encoder: ProxyEncoder,
        vrnn: VRNN,
        cropper: nn.Module,
        crop_classifier: CropClassifier,
        task: Task,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        min_scale: float = 0.2,
        max_scale: float = 0.5,
        beta: float = 1.0,
        objective: str = "sum",
        reconstruction: str = "sum",
        eval_samples: int = 0,
    ) -> None:
        super().__init__(task, optimizer, scheduler)
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        if reconstruction not in RECONSTRUCTIONS:
            raise ValueError(
                f"reconstruction must be one of {RECONSTRUCTIONS}, got {reconstruction!r}"
            )
        if eval_samples < 0:
            raise ValueError(f"eval_samples must be ≥ 0, got {eval_samples}")
        crops_from_latents(torch.zeros(1, 3), min_scale, max_scale)  # validates the bounds
        self.save_hyperparameters(
            ignore=[
                "proxy_encoder",
                "vrnn",
                "cropper",
                "crop_classifier",
                "task",
                "optimizer",
                "scheduler",
            ],
            logger=False,  # the loggers get the composed config instead
        )
        self.proxy_encoder = proxy_encoder
        self.vrnn = vrnn
        self.cropper = cropper
        self.crop_classifier = crop_classifier
        # φ_g of the closed loop: a glimpse's features → the VRNN's cell input
        self.glimpse_embedding = (
            nn.Sequential(nn.Linear(crop_classifier.feature_dim, vrnn.hidden_dim), nn.ReLU())
            if vrnn.closed_loop
            else None
        )

    def saccade(self, images: Any, proxy: Tensor, sample: bool) -> Saccades:
        """Look at a batch: (B, C, P, P) proxy and the images the cropper reads from.

        In the closed loop each glimpse is cut and encoded as soon as its latent is drawn,
        and fed back before the next; in the open loop all are cut at once afterwards.
        """
        crops, glimpses, seen = [], [], []

        def look(latents: Tensor) -> Tensor:  # (B, n, latent_dim) → (B, n, F)
            crop = crops_from_latents(latents, self.hparams.min_scale, self.hparams.max_scale)
            glimpse = self.cropper(images, crop)  # (B, n, C, w, w)
            crops.append(crop)
            glimpses.append(glimpse)
            seen.append(self.crop_classifier.encode(glimpse))
            return seen[-1]

        features = self.proxy_encoder(proxy)
        if self.glimpse_embedding is None:
            rollout = self.vrnn(features, proxy, sample)
            look(rollout.latents)
        else:
            embedding = self.glimpse_embedding
            rollout = self.vrnn(
                features, proxy, sample, lambda z: embedding(look(z[:, None])[:, 0])
            )
        log_probs = self.crop_classifier.classify(torch.cat(seen, 1)).log_softmax(dim=-1)
        return Saccades(log_probs, torch.cat(crops, 1), torch.cat(glimpses, 1), rollout)

    def objective(self, batch: Batch, sample: bool) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        samples = self.hparams.eval_samples
        if sample or samples == 0:
            looks = [self.saccade(batch["image"], batch["proxy"], sample)]
        else:
            looks = [self.saccade(batch["image"], batch["proxy"], True) for _ in range(samples)]
        # log of the mean class probability over the looks: (B, K)
        log_probs = torch.logsumexp(torch.stack([s.log_probs for s in looks]), 0) - math.log(
            len(looks)
        )
        classification_nll = self.task.nll(log_probs, batch["target"]).mean()
        kl = torch.stack([s.rollout.kl.sum(1).mean() for s in looks]).mean()
        reconstruction_nll = torch.stack(
            [s.rollout.reconstruction_nll.sum(1).mean() for s in looks]
        ).mean()
        reconstruction_weight = 1.0
        if self.hparams.reconstruction == "mean":
            reconstruction_weight = 1.0 / batch["proxy"][0].numel()
        elbo_loss = self.hparams.beta * (reconstruction_weight * reconstruction_nll + kl)
        if self.hparams.objective == "sum":
            loss = classification_nll + elbo_loss
        else:
            loss = classification_nll * elbo_loss
        parts = {
            "classification_nll": classification_nll,
            "kl": kl,
            "reconstruction_nll": reconstruction_nll,
            "crop_scale": torch.stack([s.crops[..., 0].mean() for s in looks]).mean(),
        }
        return loss, log_probs, parts
