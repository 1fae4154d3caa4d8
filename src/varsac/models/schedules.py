"""Learning-rate schedules over a run's whole length.

A schedule factory takes the optimiser and the run's number of optimiser steps
(``total_steps``, which ``ImageClassifier`` reads off the trainer) and returns
a scheduler stepped once per optimiser step. ``torch.optim.lr_scheduler.OneCycleLR``
fits the same call.
"""

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine(
    optimizer: Optimizer, total_steps: int, warmup: float = 0.02, final: float = 0.01
) -> LambdaLR:
    """The learning rate rises linearly from 0 over the first ``warmup`` of the steps, then
    falls along half a cosine to ``final`` times its value at the last step.

    A constant rate leaves the saccade model's accuracy swinging by several points from
    one evaluation to the next late in training; annealing it settles the policy.
    """
    if not 0 <= warmup < 1 or not 0 <= final <= 1:
        raise ValueError(f"need 0 ≤ warmup < 1 and 0 ≤ final ≤ 1, got {warmup}, {final}")
    warmup_steps = max(1, round(warmup * total_steps))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)
