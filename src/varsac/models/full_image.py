"""The full-image CNN baseline: the crop classifier applied once to the whole image."""

from torch import Tensor

from varsac.models.classifier import Batch, ImageClassifier, OptimizerFactory, SchedulerFactory
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

    def objective(self, batch: Batch, sample: bool) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        log_probs = self.net(batch["image"].unsqueeze(1)).log_softmax(dim=-1)
        loss = self.task.nll(log_probs, batch["target"]).mean()
        return loss, log_probs, {"classification_nll": loss}
