"""The metric varsac adds to torchmetrics': balanced accuracy (varsac.tasks names the others)."""

import torch
from torch import Tensor
from torchmetrics import Metric


class BalancedAccuracy(Metric):
    """The mean over classes of the fraction of each class predicted right, over the classes
    that occur in the targets (scikit-learn's ``balanced_accuracy_score``)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.add_state("right", torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("support", torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, predictions: Tensor, targets: Tensor) -> None:
        """(B,) predicted and (B,) true class indices."""
        self.support += torch.bincount(targets, minlength=self.num_classes)
        self.right += torch.bincount(targets[predictions == targets], minlength=self.num_classes)

    def compute(self) -> Tensor:
        present = self.support > 0
        return (self.right[present] / self.support[present]).mean()
