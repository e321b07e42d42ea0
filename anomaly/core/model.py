"""The LSTM autoencoder: a config and an ``nn.Module``, nothing else.

encoder LSTM (stacked, optionally bidirectional) → last hidden state(s) →
linear → latent vector → repeated over the window → decoder LSTM → linear
head → reconstructed window. The bottleneck forces the model to learn the
normal shapes of the training windows; shapes it has not seen reconstruct
badly, and that error is the anomaly score.

The recurrent cells are ``torch.nn.LSTM``; ``tests/test_lstm_equations.py``
rebuilds its gates by hand from the textbook equations to prove they match.
"""

from __future__ import annotations

import torch
from torch import nn

from anomaly.core.config import ModelConfig


class LSTMAutoencoder(nn.Module):
    """Reconstructs windows of shape ``(batch, time, n_features)``."""

    def __init__(self, n_features: int, config: ModelConfig | None = None) -> None:
        super().__init__()
        cfg = config or ModelConfig()
        self.n_features = n_features
        self.config = cfg
        directions = 2 if cfg.bidirectional else 1
        inter_layer_dropout = cfg.dropout if cfg.num_layers > 1 else 0.0
        self.encoder = nn.LSTM(
            input_size=n_features,
            hidden_size=cfg.hidden_size,
            num_layers=cfg.num_layers,
            batch_first=True,
            dropout=inter_layer_dropout,
            bidirectional=cfg.bidirectional,
        )
        self.to_latent = nn.Linear(cfg.hidden_size * directions, cfg.latent_size)
        self.decoder = nn.LSTM(
            input_size=cfg.latent_size,
            hidden_size=cfg.hidden_size,
            num_layers=cfg.num_layers,
            batch_first=True,
            dropout=inter_layer_dropout,
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.hidden_size, n_features)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent vector ``(batch, latent_size)`` from the last layer's final hidden state(s)."""
        _, (h_n, _) = self.encoder(x)
        directions = 2 if self.config.bidirectional else 1
        last = h_n[-directions:]  # (directions, batch, hidden): forward and, if any, backward
        summary = torch.cat(list(last), dim=-1)
        return self.to_latent(self.dropout(summary))

    def decode(self, z: torch.Tensor, length: int) -> torch.Tensor:
        """Window ``(batch, length, n_features)`` from latent vectors."""
        repeated = z.unsqueeze(1).expand(-1, length, -1)
        out, _ = self.decoder(repeated)
        return self.head(self.dropout(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x), x.shape[1])
