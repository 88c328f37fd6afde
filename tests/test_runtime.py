"""Runtime helpers that make training steps cheaper without changing what they compute."""

from __future__ import annotations

import torch
from torch import nn

from gandistill.runtime import frozen


def test_a_frozen_module_passes_gradients_through_but_computes_none_for_its_weights() -> None:
    torch.manual_seed(0)
    generator, critic = nn.Linear(4, 8), nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1))
    z = torch.randn(16, 4)

    with frozen(critic) as plain:
        loss = plain(generator(z)).mean()
    assert all(p.requires_grad for p in critic.parameters())  # restored on exit, before backward
    loss.backward()
    assert all(p.grad is None for p in critic.parameters())

    # The generator's gradient is the one an unfrozen critic gives it.
    frozen_grad = generator.weight.grad.clone()
    generator.zero_grad()
    critic(generator(z)).mean().backward()
    assert torch.allclose(generator.weight.grad, frozen_grad)
    assert all(p.grad is not None for p in critic.parameters())


def test_frozen_leaves_parameters_that_were_already_frozen_frozen() -> None:
    module = nn.Linear(3, 3)
    module.bias.requires_grad_(False)
    with frozen(module):
        assert not module.weight.requires_grad
    assert module.weight.requires_grad and not module.bias.requires_grad
