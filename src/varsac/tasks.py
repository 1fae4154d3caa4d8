"""What is being predicted: the loss, the decision and the metrics of a label space.

A task turns log-probabilities over classes into a per-sample NLL and into
predictions, and names its metrics. Every task reports ``accuracy`` (the
headline figure that checkpoints monitor) and may add its own. ``metrics()``
imports torchmetrics when it is called: training and testing need it,
prediction does not, and it is slow to import (it loads matplotlib too).
"""

from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from torchmetrics import MetricCollection


class Classification:
    """One class per image; targets are (B,) class indices.

    ``accuracy`` is the fraction right; ``balanced_accuracy`` the mean of the
    per-class recalls (over the classes present), which a skewed class
    distribution cannot inflate.
    """

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes

    def nll(self, log_probs: Tensor, target: Tensor) -> Tensor:
        """(B, K) log-probabilities, (B,) targets → (B,) negative log-likelihoods."""
        return -log_probs.gather(1, target.long().unsqueeze(1)).squeeze(1)

    def predict(self, log_probs: Tensor) -> Tensor:
        """(B, K) → (B,) most likely class."""
        return log_probs.argmax(dim=1)

    def metrics(self) -> "MetricCollection":
        from torchmetrics import MetricCollection
        from torchmetrics.classification import MulticlassAccuracy

        from varsac.metrics import BalancedAccuracy

        return MetricCollection(
            {
                "accuracy": MulticlassAccuracy(self.num_classes, average="micro"),
                "balanced_accuracy": BalancedAccuracy(self.num_classes),
            }
        )


class Counting(Classification):
    """How many there are: class k is the count k, 0 ≤ k < num_classes.

    Adds ``count_mae``, the mean absolute difference between the predicted and
    the true count (a miss by one costs less than a miss by ten).
    """

    def metrics(self) -> "MetricCollection":
        from torchmetrics import MeanAbsoluteError

        metrics = super().metrics()
        metrics.add_metrics({"count_mae": MeanAbsoluteError()})
        return metrics


class SetClassification:
    """A set of ``set_size`` distinct classes per image (two-digit identification).

    Targets are (B, K) multi-hot with ``set_size`` ones. The likelihood spreads
    the target mass evenly over the set, so −Σ_y t_y log p_y / set_size; the
    decision is the ``set_size`` most likely classes. ``accuracy`` is exact
    match (the whole set right); ``class_recall`` is the fraction of the true
    classes found (per-digit accuracy).
    """

    def __init__(self, num_classes: int, set_size: int) -> None:
        self.num_classes = num_classes
        self.set_size = set_size

    def nll(self, log_probs: Tensor, target: Tensor) -> Tensor:
        """(B, K) log-probabilities, (B, K) multi-hot targets → (B,) negative log-likelihoods."""
        return -(target * log_probs).sum(dim=1) / self.set_size

    def predict(self, log_probs: Tensor) -> Tensor:
        """(B, K) → (B, K) multi-hot of the set_size most likely classes."""
        top = log_probs.topk(self.set_size, dim=1).indices
        return torch.zeros_like(log_probs, dtype=torch.long).scatter_(1, top, 1)

    def metrics(self) -> "MetricCollection":
        from torchmetrics import MetricCollection
        from torchmetrics.classification import MultilabelExactMatch, MultilabelRecall

        return MetricCollection(
            {
                "accuracy": MultilabelExactMatch(self.num_classes),
                "class_recall": MultilabelRecall(self.num_classes, average="micro"),
            }
        )


Task = Classification | Counting | SetClassification
