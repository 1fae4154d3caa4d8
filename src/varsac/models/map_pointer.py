"""Where on the proxy to look: attention over the proxy encoder's map, and its soft-argmax.

With ``vrnn.where=map`` the centre of each saccade is not read off the pooled proxy
features by a dense layer, which must learn for every place apart what is worth a look
there. It is a weighted mean of the places of the proxy encoder's last map:

    a_t = softmax_ij( v · tanh(K m_ij + Q h_t) ),      centre_t = Σ_ij a_t,ij · p_ij

m_ij the map's features at cell (i, j), p_ij that cell's centre in the normalised frame
and h_t the VRNN's state (what it has seen in the closed loop). K and v are the same at
every cell, so "look at what looks like this" is one set of weights wherever the thing
is, and the centre's gradient moves the weight towards the cells where looking helps.
"""

import torch
from torch import Tensor, nn


class MapPointer(nn.Module):
    """(B, map_channels, s, s) proxy map and (B, hidden_dim) state → (B, 2) centre (x, y).

    The centre is in (−1, 1)², the frame of the crops (x along the width). ``keys``
    runs once per image, ``point`` once per step.
    """

    def __init__(self, map_channels: int, hidden_dim: int, width: int = 64) -> None:
        super().__init__()
        self.key = nn.Conv2d(map_channels, width, 1)
        self.query = nn.Linear(hidden_dim, width)
        self.score = nn.Conv2d(width, 1, 1)

    def keys(self, feature_map: Tensor) -> Tensor:
        """(B, map_channels, s, s) → (B, width, s, s): K m_ij, the part that does not change
        from step to step."""
        return self.key(feature_map)

    def weights(self, keys: Tensor, hidden: Tensor) -> Tensor:
        """(B, width, s, s) keys and (B, hidden_dim) state → (B, s, s) attention, summing to 1."""
        logits = self.score(torch.tanh(keys + self.query(hidden)[:, :, None, None]))
        return logits.flatten(1).softmax(-1).view(keys.shape[0], *keys.shape[2:])

    def point(self, keys: Tensor, hidden: Tensor) -> Tensor:
        """(B, width, s, s) keys and (B, hidden_dim) state → (B, 2): the attention's mean
        cell centre (x, y)."""
        weights = self.weights(keys, hidden)
        rows, columns = weights.shape[1:]
        y = (torch.arange(rows, dtype=keys.dtype, device=keys.device) * 2 + 1) / rows - 1
        x = (torch.arange(columns, dtype=keys.dtype, device=keys.device) * 2 + 1) / columns - 1
        return torch.stack([(weights.sum(1) * x).sum(-1), (weights.sum(2) * y).sum(-1)], -1)
