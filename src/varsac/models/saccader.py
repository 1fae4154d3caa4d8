"""The saccade model: proxy → VRNN → crops → glimpses → class (Eq. 5 of the paper)."""

import math

import torch
from torch import Tensor, nn

from varsac.errors import check_at_least
from varsac.models.classifier import Batch, ImageClassifier, OptimizerFactory, SchedulerFactory
from varsac.models.crop_classifier import CropClassifier
from varsac.models.proxy_encoder import ProxyEncoder
from varsac.models.saccades import Saccading
from varsac.models.spatial_transformer import FLIPS, random_flips
from varsac.models.vrnn import VRNN
from varsac.tasks import Task

OBJECTIVES = ("sum", "product")
RECONSTRUCTIONS = ("sum", "mean")


class Saccader(Saccading, ImageClassifier):
    """Variational saccading: the saccade model of models/saccades.py, and its loss.

    loss = classification NLL + β · Σ_t [reconstruction NLL_t + KL_t]   (objective="sum")
    loss = classification NLL · β · Σ_t [...]      (objective="product", the authors' code)

    The reconstruction NLL of a step is summed over the C·R·R values the decoder
    reconstructs (the proxy, or its R² downsample: ``vrnn.reconstruction_size``) with
    ``reconstruction="sum"``, the paper's, so at one β it grows with the proxy; with
    ``reconstruction="mean"`` it is their mean, in nats per value, and β weighs it the
    same at every proxy size.

    Training samples each z_t from the posterior, ``train_samples`` rollouts per image,
    each classifying on its own (the classification NLL is their mean). Evaluation
    uses the posterior mean, or with ``eval_samples`` = K > 0 averages the class
    probabilities of K posterior samples.

    ``glimpse_jitter`` = j > 0 moves each crop of a training rollout at random by up to
    j times its half-side on each axis (an augmentation against the crop classifier
    learning its training images by heart; evaluation looks where the policy says).
    ``flips`` = "horizontal" or "both" has each training rollout look at its image mirrored
    left–right (and top–bottom) at random, for data whose label a mirror keeps (a count,
    a slide, an aerial view; not a digit).

    ``policy_gradient`` = λ > 0 adds the score-function estimate of the saccades'
    gradient to the reparameterised one (as RAM trains its glimpses):

        λ · mean[(NLL − b) · Σ_t log q(z_t)],  the NLL and its baseline b held fixed,

    b the mean NLL of the image's other rollouts (of the batch when there is one per
    image). The reparameterised gradient reaches a crop only through the pixels next
    to its glimpse, so it is zero on a black background; the score function rewards
    saccades that classified better wherever they fell.
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
        beta: float = 0.01,
        objective: str = "sum",
        reconstruction: str = "sum",
        eval_samples: int = 0,
        train_samples: int = 1,
        policy_gradient: float = 0.0,
        glimpse_jitter: float = 0.0,
        flips: str = "none",
    ) -> None:
        super().__init__(task, optimizer, scheduler)
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        if reconstruction not in RECONSTRUCTIONS:
            raise ValueError(
                f"reconstruction must be one of {RECONSTRUCTIONS}, got {reconstruction!r}"
            )
        check_at_least(
            eval_samples=(eval_samples, 0),
            train_samples=(train_samples, 1),
            policy_gradient=(policy_gradient, 0.0),
            glimpse_jitter=(glimpse_jitter, 0.0),
        )
        if flips not in FLIPS:
            raise ValueError(f"flips must be one of {tuple(FLIPS)}, got {flips!r}")
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
        self.add_parts(proxy_encoder, vrnn, cropper, crop_classifier, min_scale, max_scale)

    def objective(self, batch: Batch, sample: bool) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        looks = self.hparams.train_samples if sample else max(self.hparams.eval_samples, 1)
        proxy = batch["proxy"]
        flips = random_flips(len(proxy), self.hparams.flips, proxy.device) if sample else None
        saccades = self.saccade(
            batch["image"],
            proxy,
            sample or looks > 1,
            elbo=True,
            looks=looks,
            scale_bounds=batch.get("scale_bounds"),
            jitter=self.hparams.glimpse_jitter if sample else 0.0,
            flips=flips,
        )
        # log of the mean class probability over the looks of each image: (B, K)
        looked = saccades.log_probs.view(-1, looks, saccades.log_probs.shape[-1])
        log_probs = torch.logsumexp(looked, 1) - math.log(looks)
        if sample:  # every look classifies on its own: (B, looks)
            targets = batch["target"].repeat_interleave(looks, 0)
            look_nll = self.task.nll(saccades.log_probs, targets).view(-1, looks)
            classification_nll = look_nll.mean()
        else:
            classification_nll = self.task.nll(log_probs, batch["target"]).mean()
        kl = saccades.rollout.kl.sum(1).mean()
        reconstruction_nll = saccades.rollout.reconstruction_nll.sum(1).mean()
        reconstruction_weight = 1.0
        if self.hparams.reconstruction == "mean":
            reconstruction_weight = 1.0 / self.vrnn.reconstructed_values
        elbo_loss = self.hparams.beta * (reconstruction_weight * reconstruction_nll + kl)
        if self.hparams.objective == "sum":
            loss = classification_nll + elbo_loss
        else:
            loss = classification_nll * elbo_loss
        if sample and self.hparams.policy_gradient > 0:
            loss = loss + self.hparams.policy_gradient * self.policy_loss(
                look_nll.detach(), saccades.rollout.log_posterior.sum(1).view(-1, looks)
            )
        parts = {
            "classification_nll": classification_nll,
            "kl": kl,
            "reconstruction_nll": reconstruction_nll,
            "crop_scale": saccades.crops[..., 0].mean(),
        }
        return loss, log_probs, parts

    @staticmethod
    def policy_loss(look_nll: Tensor, score: Tensor) -> Tensor:
        """The score-function term: (B, L) NLLs of the looks, held fixed, and their (B, L)
        Σ_t log q(z_t) → mean[(NLL − b) · score], b the mean NLL of the image's other looks
        (of the whole batch when L = 1)."""
        looks = look_nll.shape[1]
        if looks > 1:
            baseline = (look_nll.sum(1, keepdim=True) - look_nll) / (looks - 1)
        else:
            baseline = look_nll.mean()
        return ((look_nll - baseline) * score).mean()
