"""The trainer: time-ordered split, early stopping, callbacks, threads, device choice."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from anomaly.core.config import ModelConfig, TrainingConfig
from anomaly.errors import ConfigError
from anomaly.core.model import LSTMAutoencoder
from anomaly.core.training import (
    EpochResult,
    History,
    _loss,
    resolve_device,
    split_train_validation,
    torch_threads,
    train_model,
)
from anomaly.core.windows import sliding_windows, window_starts


def sine_windows(n: int = 400, size: int = 16) -> np.ndarray:
    t = np.arange(n, dtype=np.float32)
    return sliding_windows(np.sin(2 * np.pi * t / 24)[:, None], size)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(20, 500), size=st.integers(2, 20), fraction=st.floats(0.05, 0.5))
def test_split_is_time_ordered_and_never_overlaps(n: int, size: int, fraction: float) -> None:
    starts = window_starts(n, size, 1)
    train, val = split_train_validation(starts, size, fraction)
    assert len(train) >= 1
    if len(val):
        assert train.max() + size <= val.min(), "a training window reaches into validation"
        assert np.all(np.diff(val) > 0)


def test_split_exact_example() -> None:
    train, val = split_train_validation(np.arange(10), 3, 0.2)
    assert val.tolist() == [8, 9]
    assert train.tolist() == [0, 1, 2, 3, 4, 5]  # 6 and 7 would overlap window 8


def test_no_validation_when_fraction_is_zero() -> None:
    train, val = split_train_validation(np.arange(10), 3, 0.0)
    assert train.tolist() == list(range(10)) and len(val) == 0


def test_training_reduces_loss_and_reports_every_epoch() -> None:
    windows = sine_windows()
    train, val = split_train_validation(np.arange(len(windows)), 16, 0.2)
    seen: list[EpochResult] = []
    torch.manual_seed(0)
    model = LSTMAutoencoder(1, ModelConfig(hidden_size=16, latent_size=4))
    config = TrainingConfig(epochs=8, batch_size=32, learning_rate=1e-2, patience=8, schedule="constant")
    history = train_model(model, windows, train, val, config, [seen.append], progress=False)
    assert [r.epoch for r in seen] == list(range(1, 9))
    assert history.train_loss == [r.train_loss for r in seen]
    assert history.val_loss[-1] is not None and history.val_loss[-1] < history.val_loss[0] / 2
    assert history.windows_seen == 8 * len(train)
    assert history.windows_per_second > 0
    assert not model.training, "the model is returned in eval mode"


def _rates(schedule: str) -> tuple[list[float], list[float]]:
    windows = sine_windows()
    train, val = split_train_validation(np.arange(len(windows)), 16, 0.2)
    model = LSTMAutoencoder(1, ModelConfig(hidden_size=8, latent_size=2))
    seen: list[EpochResult] = []
    config = TrainingConfig(epochs=10, batch_size=32, learning_rate=1e-2, patience=10, schedule=schedule)  # type: ignore[arg-type]
    train_model(model, windows, train, val, config, [seen.append], progress=False)
    return [r.learning_rate for r in seen], [r.val_loss or 0.0 for r in seen]


def test_constant_schedule_keeps_the_learning_rate() -> None:
    assert _rates("constant")[0] == [1e-2] * 10


def test_one_cycle_warms_up_to_the_learning_rate_then_anneals() -> None:
    rates, val_loss = _rates("one_cycle")
    peak = int(np.argmax(rates))
    assert max(rates) <= 1e-2 and max(rates) > 0.9e-2, "the peak is training.learning_rate"
    assert 1 <= peak <= 4, f"warm-up is the first 30% of the steps, peak after epoch {peak + 1}"
    assert all(a < b for a, b in zip(rates[:peak], rates[1 : peak + 1])), "rises to the peak"
    assert all(a > b for a, b in zip(rates[peak:], rates[peak + 1 :])), "then only falls"
    assert rates[-1] < 1e-5, "the cycle ends at almost nothing after the planned epochs"
    assert val_loss[-1] < 0.8 * val_loss[0], "and it learns (a sine's mean alone has loss 0.5)"


def test_early_stopping_restores_the_best_weights() -> None:
    windows = sine_windows()
    train, val = split_train_validation(np.arange(len(windows)), 16, 0.2)
    model = LSTMAutoencoder(1, ModelConfig(hidden_size=8, latent_size=2))
    best_state: dict[str, torch.Tensor] = {}

    def remember(result: EpochResult) -> None:
        if result.best:
            best_state.update({k: v.clone() for k, v in model.state_dict().items()})

    # A learning rate this high makes validation loss bounce, so patience runs out.
    config = TrainingConfig(epochs=40, batch_size=16, learning_rate=0.5, patience=2)
    history = train_model(model, windows, train, val, config, [remember], progress=False)
    assert history.stopped_early and len(history.train_loss) < 40
    assert history.best_epoch == 1 + int(np.argmin([v for v in history.val_loss]))
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, best_state[name]), name


def test_history_round_trips_through_a_dict() -> None:
    history = History(train_loss=[0.5, 0.25], val_loss=[0.6, None], best_epoch=1, seconds=2.0, windows_seen=10)
    data = history.to_dict()
    assert data["windows_per_second"] == 5.0
    assert History.from_dict(data) == history


def test_thread_setting_is_restored() -> None:
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_device_choice() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="training.device is 'cuda' but no CUDA GPU"):
            resolve_device("cuda")


def test_missing_points_stay_out_of_the_loss() -> None:
    """With ``observed``, a batch's loss is the mean squared error over its observed points only."""
    t = np.arange(100, dtype=np.float32)
    values = np.sin(2 * np.pi * t / 24)[:, None]
    observed = np.ones_like(values, dtype=bool)
    observed[::7] = False
    windows, mask, starts = sliding_windows(values, 16), sliding_windows(observed, 16), np.arange(0, 80, 5)
    torch.manual_seed(0)
    model = LSTMAutoencoder(1, ModelConfig(hidden_size=8, latent_size=2)).eval()
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(windows[starts]))
        squared = ((model(x) - x) ** 2).numpy()
        masked, size = _loss(model, windows, starts, torch.nn.MSELoss(), torch.device("cpu"), mask)
        plain, _ = _loss(model, windows, starts, torch.nn.MSELoss(), torch.device("cpu"), None)
        everything, _ = _loss(model, windows, starts, torch.nn.MSELoss(), torch.device("cpu"), np.ones_like(mask))
    assert size == len(starts)
    assert float(masked) == pytest.approx(float(squared[mask[starts]].mean()), rel=1e-6)
    assert float(masked) != pytest.approx(float(squared.mean()), rel=1e-3)
    assert float(everything) == pytest.approx(float(plain), rel=1e-6)
