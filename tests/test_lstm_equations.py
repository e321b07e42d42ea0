"""``torch.nn.LSTM`` is the textbook LSTM: rebuild its gates by hand in numpy.

With [h_{t-1}, x_t] the concatenation of the previous hidden state and the input:

    f_t = σ(W_f·[h_{t-1}, x_t] + b_f)          forget gate
    i_t = σ(W_i·[h_{t-1}, x_t] + b_i)          input gate
    C̃_t = tanh(W_C·[h_{t-1}, x_t] + b_C)       candidate
    C_t = f_t ⊙ C_{t-1} + i_t ⊙ C̃_t            cell
    o_t = σ(W_o·[h_{t-1}, x_t] + b_o)          output gate
    h_t = o_t ⊙ tanh(C_t)

torch stores the four gates stacked in the order (i, f, g=C̃, o), with the
input and recurrent halves of W as ``weight_ih`` and ``weight_hh`` and two
bias vectors that add up to b. The autoencoder's own encoder and decoder are
checked, so the model really uses these cells.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anomaly.core.config import ModelConfig
from anomaly.core.model import LSTMAutoencoder


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def gate_weights(lstm: torch.nn.LSTM, layer: int, suffix: str = "") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per gate: W acting on [h_{t-1}, x_t] and b, as the equations write them."""
    w_ih = getattr(lstm, f"weight_ih_l{layer}{suffix}").detach().double().numpy()
    w_hh = getattr(lstm, f"weight_hh_l{layer}{suffix}").detach().double().numpy()
    bias = (getattr(lstm, f"bias_ih_l{layer}{suffix}") + getattr(lstm, f"bias_hh_l{layer}{suffix}")).detach().double().numpy()
    hidden = lstm.hidden_size
    gates = {}
    for k, name in enumerate(("i", "f", "C", "o")):  # torch's stacking order
        rows = slice(k * hidden, (k + 1) * hidden)
        gates[name] = (np.concatenate([w_hh[rows], w_ih[rows]], axis=1), bias[rows])
    return gates


def textbook_layer(x: np.ndarray, gates: dict[str, tuple[np.ndarray, np.ndarray]], hidden: int) -> np.ndarray:
    """Run one direction of one layer over ``x`` (batch, time, features); returns all h_t."""
    batch, steps, _ = x.shape
    h = np.zeros((batch, hidden))
    c = np.zeros((batch, hidden))
    outputs = []
    for t in range(steps):
        hx = np.concatenate([h, x[:, t, :]], axis=1)  # [h_{t-1}, x_t]
        f = sigmoid(hx @ gates["f"][0].T + gates["f"][1])
        i = sigmoid(hx @ gates["i"][0].T + gates["i"][1])
        c_tilde = np.tanh(hx @ gates["C"][0].T + gates["C"][1])
        c = f * c + i * c_tilde
        o = sigmoid(hx @ gates["o"][0].T + gates["o"][1])
        h = o * np.tanh(c)
        outputs.append(h)
    return np.stack(outputs, axis=1)


def textbook_lstm(lstm: torch.nn.LSTM, x: np.ndarray) -> np.ndarray:
    """Stacked (and optionally bidirectional) LSTM from the equations, layer by layer."""
    layer_input = x
    for layer in range(lstm.num_layers):
        forward = textbook_layer(layer_input, gate_weights(lstm, layer), lstm.hidden_size)
        if lstm.bidirectional:
            backward = textbook_layer(layer_input[:, ::-1], gate_weights(lstm, layer, "_reverse"), lstm.hidden_size)
            forward = np.concatenate([forward, backward[:, ::-1]], axis=2)
        layer_input = forward
    return layer_input


@pytest.mark.parametrize(
    ("num_layers", "bidirectional"),
    [(1, False), (2, False), (3, False), (2, True)],
    ids=["one-layer", "stacked-2", "stacked-3", "stacked-bidirectional"],
)
def test_torch_lstm_matches_the_equations(num_layers: int, bidirectional: bool) -> None:
    torch.manual_seed(7)
    lstm = torch.nn.LSTM(input_size=3, hidden_size=5, num_layers=num_layers, batch_first=True, bidirectional=bidirectional)
    x = np.random.default_rng(0).normal(size=(4, 9, 3))
    with torch.no_grad():
        expected, _ = lstm(torch.from_numpy(x).float())
    got = textbook_lstm(lstm, x)
    np.testing.assert_allclose(got, expected.double().numpy(), rtol=1e-5, atol=1e-6)


def test_the_equations_would_notice_a_wrong_gate_order() -> None:
    """Guard against a vacuous test: swapping forget and input gates must break the match."""
    torch.manual_seed(3)
    lstm = torch.nn.LSTM(input_size=2, hidden_size=4, batch_first=True)
    x = np.random.default_rng(1).normal(size=(2, 6, 2))
    gates = gate_weights(lstm, 0)
    gates["i"], gates["f"] = gates["f"], gates["i"]
    with torch.no_grad():
        expected, _ = lstm(torch.from_numpy(x).float())
    assert not np.allclose(textbook_layer(x, gates, 4), expected.double().numpy(), atol=1e-3)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_autoencoder_is_built_from_these_cells(bidirectional: bool) -> None:
    """Encoder and decoder of the model reproduce the equations on the model's own weights."""
    torch.manual_seed(0)
    model = LSTMAutoencoder(2, ModelConfig(hidden_size=6, latent_size=3, num_layers=2, bidirectional=bidirectional))
    model.eval()
    x = np.random.default_rng(2).normal(size=(3, 8, 2))
    with torch.no_grad():
        enc_out, _ = model.encoder(torch.from_numpy(x).float())
        latent = model.encode(torch.from_numpy(x).float())
        decoded = model.decode(latent, 8)
    enc = textbook_lstm(model.encoder, x)
    np.testing.assert_allclose(enc, enc_out.double().numpy(), rtol=1e-5, atol=1e-6)
    # The latent summary is the last forward state and, if bidirectional, the first backward one.
    hidden = model.config.hidden_size
    summary = np.concatenate([enc[:, -1, :hidden], enc[:, 0, hidden:]], axis=1) if bidirectional else enc[:, -1]
    w, b = model.to_latent.weight.detach().double().numpy(), model.to_latent.bias.detach().double().numpy()
    z = summary @ w.T + b
    np.testing.assert_allclose(z, latent.double().numpy(), rtol=1e-5, atol=1e-6)
    dec = textbook_lstm(model.decoder, np.repeat(z[:, None, :], 8, axis=1))
    hw, hb = model.head.weight.detach().double().numpy(), model.head.bias.detach().double().numpy()
    np.testing.assert_allclose(dec @ hw.T + hb, decoded.double().numpy(), rtol=1e-5, atol=1e-5)
