"""A small, model-agnostic trainer for reconstruction models.

Adam on MSE, shuffled mini-batches drawn from a window *view* (one batch is
copied at a time), a time-ordered validation split, early stopping that keeps
the best weights, gradient clipping, and a per-epoch callback so callers (the
CLI's progress bar, the Prefect flows' logger) see progress without this module
knowing about them. Seeded and deterministic on CPU.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from anomaly.core.config import TrainingConfig
from anomaly.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochResult:
    """What one epoch did; passed to every callback."""

    epoch: int
    epochs: int
    train_loss: float
    val_loss: float | None
    best: bool
    seconds: float
    learning_rate: float  # the optimiser's rate when the epoch ended (it moves under a schedule)


EpochCallback = Callable[[EpochResult], None]


@dataclass
class History:
    """Loss per epoch and how training ended; stored with the model as JSON."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float | None] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False
    seconds: float = 0.0
    windows_seen: int = 0
    device: str = "cpu"

    @property
    def windows_per_second(self) -> float:
        return self.windows_seen / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "windows_per_second": self.windows_per_second}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "History":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def resolve_device(kind: str) -> torch.device:
    """``auto`` takes a CUDA GPU when one is present, else the CPU."""
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError("training.device is 'cuda' but no CUDA GPU is available")
    if kind == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(kind)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op threads, restoring the caller's setting after."""
    if n is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def split_train_validation(starts: np.ndarray, size: int, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Time-ordered split of window starts: the last ``fraction`` validates.

    Training windows that overlap the first validation window are dropped so
    no validation point is ever seen in training.
    """
    n_val = int(round(len(starts) * fraction))
    if fraction == 0 or n_val < 1 or len(starts) - n_val < 1:
        return starts, starts[:0]
    val = starts[-n_val:]
    train = starts[: len(starts) - n_val]
    train = train[train + size <= val[0]]
    if len(train) == 0:
        return starts, starts[:0]
    return train, val


#: torch's random generator is process-wide, and flows fit groups in parallel threads.
#: Fits seed it, draw initial weights and put it back only while holding this lock,
#: so a model's initial weights never depend on another fit's timing.
RNG_LOCK = threading.RLock()


@contextlib.contextmanager
def kept_rng() -> Iterator[None]:
    """Put torch's generator back as it was afterwards (under :data:`RNG_LOCK`): fitting leaves the caller's RNG alone."""
    state = torch.get_rng_state()
    try:
        yield
    finally:
        with RNG_LOCK:
            torch.set_rng_state(state)


def train_model(
    model: nn.Module,
    windows: np.ndarray,
    train_starts: np.ndarray,
    val_starts: np.ndarray,
    config: TrainingConfig,
    callbacks: Sequence[EpochCallback] = (),
    *,
    progress: bool | None = None,
    observed: np.ndarray | None = None,
) -> History:
    """Fit ``model`` to reconstruct ``windows[train_starts]``; returns the loss history.

    ``windows`` is the (n, size, m) view from :func:`anomaly.core.windows.sliding_windows`
    indexed by window start. ``observed``, a boolean view of the same shape,
    keeps the points it marks False (missing, bridged in ``windows``) out of
    the loss; None counts every point. Early stopping watches the validation
    loss (the training loss when there is no validation split) and restores
    the best weights before returning.
    """
    device = resolve_device(config.device)
    with RNG_LOCK:
        torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model.to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    scheduler = _scheduler(optimiser, config, len(train_starts))
    loss_fn = nn.MSELoss()
    history = History(device=str(device))
    best_loss, best_state, stale = float("inf"), copy.deepcopy(model.state_dict()), 0
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(range(1, config.epochs + 1), desc="training", unit="epoch", disable=not show, leave=False)
    started = time.perf_counter()
    with torch_threads(config.num_threads):
        for epoch in bar:
            t0 = time.perf_counter()
            order = rng.permutation(train_starts)
            train_loss = _train_epoch(model, windows, order, config, optimiser, loss_fn, device, scheduler, observed)
            history.windows_seen += len(order)
            val_loss = _evaluate(model, windows, val_starts, config.batch_size, loss_fn, device, observed)
            watched = train_loss if val_loss is None else val_loss
            improved = watched < best_loss - config.min_delta
            if improved:
                best_loss, best_state, stale = watched, copy.deepcopy(model.state_dict()), 0
                history.best_epoch = epoch
            else:
                stale += 1
            history.train_loss.append(train_loss)
            history.val_loss.append(val_loss)
            result = EpochResult(
                epoch, config.epochs, train_loss, val_loss, improved, time.perf_counter() - t0,
                learning_rate=optimiser.param_groups[0]["lr"],
            )
            bar.set_postfix(loss=f"{train_loss:.4g}", val=f"{val_loss:.4g}" if val_loss is not None else "-")
            for callback in callbacks:
                callback(result)
            if stale >= config.patience:
                history.stopped_early = True
                break
    history.seconds = time.perf_counter() - started
    model.load_state_dict(best_state)
    model.eval()
    return history


def _scheduler(
    optimiser: torch.optim.Optimizer, config: TrainingConfig, n_train: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The per-step learning-rate schedule ``config.schedule`` names (None: constant).

    The one cycle is planned over every step ``config.epochs`` would take, so
    stopping early leaves it unfinished rather than compressing it.
    """
    if config.schedule == "constant":
        return None
    steps = config.epochs * max(1, math.ceil(n_train / config.batch_size))
    return torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=config.learning_rate, total_steps=steps)


def _batch(windows: np.ndarray, starts: np.ndarray, device: torch.device) -> torch.Tensor:
    """Copy just this batch out of the window view."""
    return torch.from_numpy(np.ascontiguousarray(windows[starts], dtype=np.float32)).to(device)


def _loss(
    model: nn.Module, windows: np.ndarray, starts: np.ndarray, loss_fn: nn.Module, device: torch.device,
    observed: np.ndarray | None,
) -> tuple[torch.Tensor, int]:
    """The batch's reconstruction loss, and its size; with ``observed``, the mean over observed points only."""
    x = _batch(windows, starts, device)
    if observed is None:
        return loss_fn(model(x), x), len(x)
    weight = _batch(observed, starts, device)
    return ((model(x) - x) ** 2 * weight).sum() / weight.sum().clamp_min(1.0), len(x)


def _train_epoch(
    model: nn.Module,
    windows: np.ndarray,
    order: np.ndarray,
    config: TrainingConfig,
    optimiser: torch.optim.Optimizer,
    loss_fn: nn.Module,
    device: torch.device,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    observed: np.ndarray | None = None,
) -> float:
    model.train()
    total, count = 0.0, 0
    for i in range(0, len(order), config.batch_size):
        optimiser.zero_grad(set_to_none=True)
        loss, size = _loss(model, windows, order[i : i + config.batch_size], loss_fn, device, observed)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimiser.step()
        if scheduler is not None:
            scheduler.step()
        total += float(loss.detach()) * size
        count += size
    return total / max(count, 1)


def _evaluate(
    model: nn.Module,
    windows: np.ndarray,
    starts: np.ndarray,
    batch_size: int,
    loss_fn: nn.Module,
    device: torch.device,
    observed: np.ndarray | None = None,
) -> float | None:
    if len(starts) == 0:
        return None
    model.eval()
    total = 0.0
    with torch.inference_mode():
        for i in range(0, len(starts), batch_size * 4):
            loss, size = _loss(model, windows, starts[i : i + batch_size * 4], loss_fn, device, observed)
            total += float(loss) * size
    return total / len(starts)
