"""Projection heads mapping tower outputs into the joint embedding space."""

from torch import nn


class ProjectionHead(nn.Module):
    """Linear(in_dim -> out_dim) -> ReLU -> Linear(out_dim -> out_dim), as in LAION-CLAP."""

    def __init__(self, in_dim: int, out_dim: int = 512):
        super().__init__()
        self.linear1 = nn.Linear(in_dim, out_dim)
        self.activation = nn.ReLU()
        self.linear2 = nn.Linear(out_dim, out_dim)

    def forward(self, x):
        return self.linear2(self.activation(self.linear1(x)))
