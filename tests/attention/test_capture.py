"""The capture API: weights from every attention module, output still from the fused kernel."""

from __future__ import annotations

import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attend.attention import AttentionPooling, MultiHeadAttention, capture_attention

E, H = 16, 4


class TwoLayer(nn.Module):
    """A toy model that never asks its attention modules for weights."""

    def __init__(self, **options: object) -> None:
        super().__init__()
        self.layers = nn.ModuleList(MultiHeadAttention(E, H, **options) for _ in range(2))
        self.pool = AttentionPooling(E)

    def forward(self, x: torch.Tensor, kpm: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self.layers:
            x = x + layer(x, key_padding_mask=kpm)[0]
        return self.pool(x, kpm)[0]


def test_capture_collects_every_layer_in_call_order_without_changing_the_output() -> None:
    model = TwoLayer().eval()
    x = torch.randn(3, 7, E)
    kpm = torch.zeros(3, 7, dtype=torch.bool)
    kpm[1, 5:] = True
    plain = model(x, kpm)
    with capture_attention(model) as cap:
        captured = model(x, kpm)
    assert torch.equal(plain, captured)  # bit-identical: same kernel, same inputs
    assert [r.name for r in cap.records] == ["layers.0", "layers.1", "pool"]
    assert [tuple(w.shape) for w in cap.weights] == [(3, H, 7, 7)] * 2
    assert tuple(cap.pooling_weights[0].shape) == (3, 7)
    for w in cap.weights:
        torch.testing.assert_close(w.sum(-1), torch.ones(3, H, 7))
        assert (w[1, :, :, 5:] == 0).all()
    # The maps equal what the explicit path computes.
    explicit = TwoLayer(backend="eager").eval()
    explicit.load_state_dict(model.state_dict())
    with capture_attention(explicit) as ref:
        explicit(x, kpm)
    for ours, theirs in zip(cap.weights, ref.weights, strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)
    # Outside the context nothing is recorded any more.
    model(x, kpm)
    assert len(cap.records) == 3


def test_capture_keeps_the_fused_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = F.scaled_dot_product_attention

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting)
    model = TwoLayer().eval()
    with capture_attention(model) as cap:
        model(torch.randn(2, 5, E))
    assert len(calls) == 2 and len(cap.weights) == 2


def test_capture_with_grad_matches_explicit_gradients() -> None:
    torch.manual_seed(2)
    fused = TwoLayer().double()
    explicit = TwoLayer(backend="eager").double()
    explicit.load_state_dict(fused.state_dict())
    x = torch.randn(2, 6, E, dtype=torch.float64)
    grads = []
    for model in (fused, explicit):
        model.zero_grad()
        with capture_attention(model, grad=True) as cap:
            out = model(x)
        out.sum().backward()
        grads.append(([w.grad.clone() for w in cap.weights], [p.grad.clone() for p in model.parameters()]))
    for a, b in zip(grads[0][0], grads[1][0], strict=True):
        torch.testing.assert_close(a, b)
    for a, b in zip(grads[0][1], grads[1][1], strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("options", [{"attention": "local", "window": 2}, {"attention": "linear"}])
def test_capture_with_grad_on_efficient_backends(options: dict) -> None:
    model = TwoLayer(**options).double()
    with capture_attention(model, grad=True) as cap:
        model(torch.randn(2, 6, E, dtype=torch.float64)).sum().backward()
    assert all(w.grad is not None and w.grad.abs().sum() > 0 for w in cap.weights)


@pytest.mark.parametrize("options", [{}, {"attention": "local", "window": 3}])
def test_capture_with_grad_under_dropout_gives_the_outputs_gradient(options: dict) -> None:
    """Training with dropout: the output used dropped weights, but its gradient had been taken from
    the undropped ones (SDPA and local), so every gradient was another model's. A finite difference
    of the same dropout draws is the truth."""
    module = MultiHeadAttention(8, 2, dropout=0.5, **options).double().train()
    x = torch.randn(2, 12, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    direction = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def loss(z: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(1)  # the same dropout draws each call
        with capture_attention(module, grad=True) as cap:
            out = module(z, z, z)[0]
        return (out * torch.linspace(-1, 1, out.shape[-1], dtype=torch.float64)).sum(), cap

    z = x.clone().requires_grad_(True)
    value, cap = loss(z)
    value.backward()
    numeric = (loss(x + 1e-6 * direction)[0] - loss(x - 1e-6 * direction)[0]) / 2e-6
    torch.testing.assert_close((z.grad * direction).sum(), numeric, rtol=1e-6, atol=1e-8)
    assert all(w.grad is not None and w.grad.abs().sum() > 0 for w in cap.weights)  # d loss / d weights, still


def test_capture_is_scoped_to_its_model_and_thread() -> None:
    watched, other = TwoLayer().eval(), TwoLayer().eval()
    x = torch.randn(1, 4, E)
    seen_in_thread = []
    with capture_attention(watched) as cap:
        other(x)
        thread = threading.Thread(target=lambda: seen_in_thread.append(watched(x)))
        thread.start()
        thread.join()
        assert cap.records == []  # neither another model nor another thread is recorded
        watched(x)
    assert len(cap.weights) == 2
    assert set(cap.by_name()) == {"layers.0", "layers.1", "pool"}


def test_captures_left_out_of_order_each_stop() -> None:
    model, x = TwoLayer().eval(), torch.randn(1, 4, E)
    first, second = capture_attention(model), capture_attention(model)
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    model(x)
    assert first.records == [] and len(second.weights) == 2
    second.__exit__(None, None, None)  # restored the tuple from before it: first, recording for ever
    model(x)
    assert first.records == [] and len(second.weights) == 2


def test_capture_rejects_a_model_without_attention() -> None:
    with pytest.raises(ValueError, match="contains no attend attention modules"):
        capture_attention(nn.Linear(2, 2))
