"""The full-image CNN baseline: the crop classifier applied once to the whole image."""

from torch import Tensor

from varsac.models.classifier import ImageClassifier, OptimizerFactory, SchedulerFactory
from varsac.models.crop_classifier import CropClassifier
from varsac.tasks import Task


class FullImageClassifier(ImageClassifier):
    """Looks at everything: (B, C, H, W) image → one "glimpse" of the whole image → class."""

    def __init__(
        self,
        net: CropClassifier,
        task: Task,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
    ) -> None:
        super().__init__(task, optimizer, scheduler)
        self.net = net

    def forward(self, images: Tensor) -> Tensor:
        """(B, C, H, W) images, each one glimpse of the net → (B, K) class log-probabilities."""
        return self.net(images.unsqueeze(1)).log_softmax(dim=-1)
