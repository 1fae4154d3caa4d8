"""varsac: classify huge images from a few glimpses chosen by a variational recurrent network."""

__version__ = "0.1.0"
