"""varsac: classify huge images from a few glimpses chosen by a variational recurrent network.

``varsac.Predictor`` (varsac.predictor) is a trained model on your images; it is imported on
first use, so that ``import varsac`` (the command line's ``--help``) loads no torch.
"""

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Predictor", "__version__"]

if TYPE_CHECKING:
    from varsac.predictor import Predictor


def __getattr__(name: str) -> Any:
    if name == "Predictor":
        from varsac.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'varsac' has no attribute {name!r}")
