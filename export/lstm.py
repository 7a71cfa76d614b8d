"""The LSTM: a window of feature vectors -> P(next close up).

Standardisation (the training span's mean and std) is a buffer of the module, so it is exported
inside the ONNX graph and serving cannot apply different scaling than training did.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from tqdm import tqdm

from export.evaluation import score


@dataclass(frozen=True)
class LSTMSettings:
    hidden: int = 32
    layers: int = 1
    dropout: float = 0.0
    epochs: int = 30
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    #: Stop after this many epochs without a better validation log-loss (keep the best epoch).
    patience: int = 5


class DirectionLSTM(nn.Module):
    def __init__(
        self, n_features: int, settings: LSTMSettings, mean: np.ndarray, std: np.ndarray
    ) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))
        self.lstm = nn.LSTM(
            n_features,
            settings.hidden,
            num_layers=settings.layers,
            batch_first=True,
            dropout=settings.dropout if settings.layers > 1 else 0.0,
        )
        self.head = nn.Linear(settings.hidden, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        mean, std = self.get_buffer("mean"), self.get_buffer("std")
        x = (features - mean) / std
        out, _ = self.lstm(x)
        return torch.sigmoid(self.head(out[:, -1, :])).squeeze(-1)


def train_lstm(
    x_train: npt.NDArray[np.float32],
    y_train: npt.NDArray[np.float64],
    x_val: npt.NDArray[np.float32],
    y_val: npt.NDArray[np.float64],
    settings: LSTMSettings,
    seed: int,
    progress: bool = True,
) -> tuple[DirectionLSTM, list[dict[str, float]]]:
    """Adam on binary cross-entropy with early stopping on the validation log-loss. Seeded."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    flat = x_train.reshape(-1, x_train.shape[-1])
    std = flat.std(axis=0)
    model = DirectionLSTM(
        x_train.shape[-1], settings, flat.mean(axis=0), np.where(std > 0, std, 1.0)
    )
    optimiser = torch.optim.Adam(
        model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    loss_fn = nn.BCELoss()
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train.astype(np.float32))
    xv = torch.from_numpy(x_val)
    best, best_loss, stale = copy.deepcopy(model.state_dict()), float("inf"), 0
    history: list[dict[str, float]] = []
    epochs = tqdm(
        range(settings.epochs), desc="lstm", unit="epoch", disable=not progress, leave=False
    )
    for epoch in epochs:
        model.train()
        order = torch.randperm(len(xt), generator=generator)
        for start in range(0, len(order), settings.batch_size):
            batch = order[start : start + settings.batch_size]
            optimiser.zero_grad()
            loss = loss_fn(model(xt[batch]), yt[batch])
            loss.backward()
            optimiser.step()
        model.eval()
        with torch.no_grad():
            p_val = model(xv).numpy().astype(np.float64)
        metrics = score(p_val, y_val)
        history.append({"epoch": float(epoch), **metrics})
        epochs.set_postfix(val_log_loss=f"{metrics['log_loss']:.4f}")
        if metrics["log_loss"] < best_loss - 1e-5:
            best, best_loss, stale = copy.deepcopy(model.state_dict()), metrics["log_loss"], 0
        else:
            stale += 1
            if stale >= settings.patience:
                break
    model.load_state_dict(best)
    model.eval()
    return model, history


def predict_lstm(model: DirectionLSTM, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    with torch.no_grad():
        out: npt.NDArray[np.float64] = model(torch.from_numpy(x)).numpy().astype(np.float64)
        return out
