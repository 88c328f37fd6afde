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


def test_a_fused_optimizer_takes_the_step_the_default_one_takes() -> None:
    from gandistill.runtime import fused

    torch.manual_seed(0)
    for cls, settings in ((torch.optim.AdamW, {"lr": 3e-3, "weight_decay": 1e-4}),
                          (torch.optim.Adam, {"lr": 2e-4, "betas": (0.5, 0.999)}),
                          (torch.optim.SGD, {"lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4})):
        plain, fast = nn.Linear(6, 4), nn.Linear(6, 4)
        fast.load_state_dict(plain.state_dict())
        optimizers = cls(plain.parameters(), **settings), fused(cls, fast.parameters(), **settings)
        assert optimizers[1].defaults["fused"]
        for _ in range(5):
            x = torch.randn(8, 6)
            for model, opt in zip((plain, fast), optimizers, strict=True):
                opt.zero_grad()
                model(x).pow(2).mean().backward()
                opt.step()
        for a, b in zip(plain.parameters(), fast.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
