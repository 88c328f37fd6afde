"""gandistill.nets.conv.Conv2d: nn.Conv2d whose input gradient skips oneDNN on image-reading layers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gandistill.nets.conv import Conv2d, _ImageInputConv


@pytest.mark.parametrize("shape", [(1, 6, 5, 2, 1), (3, 16, 3, 1, 1), (3, 8, 4, 1, 2)])
def test_outputs_and_every_gradient_equal_nn_conv2d(shape) -> None:
    cin, cout, k, pad, stride = shape
    torch.manual_seed(0)
    plain = nn.Conv2d(cin, cout, k, stride, pad).double()
    fast = Conv2d(cin, cout, k, stride, pad).double()
    fast.load_state_dict(plain.state_dict())
    x = torch.randn(4, cin, 20, 20, dtype=torch.double, requires_grad=True)
    want = torch.autograd.grad(plain(x).square().sum(), [x, plain.weight, plain.bias])
    out = fast(x)
    assert out.grad_fn is not None and "ImageInputConv" in type(out.grad_fn).__name__  # the fast path ran
    got = torch.autograd.grad(out.square().sum(), [x, fast.weight, fast.bias])
    for a, b in zip(want, got, strict=True):
        torch.testing.assert_close(a, b)


def test_the_backward_passes_gradcheck_without_bias_and_for_the_input_only() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 1, 7, 7, dtype=torch.double, requires_grad=True)
    w = torch.randn(3, 1, 3, 3, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w: _ImageInputConv.apply(x, w, None, (1, 1), (1, 1), (1, 1), 1), (x, w))
    frozen_w = w.detach()
    assert torch.autograd.gradcheck(
        lambda x: _ImageInputConv.apply(x, frozen_w, None, (2, 2), (0, 0), (1, 1), 1), (x,))


def test_the_oneDNN_switch_is_restored_and_data_inputs_take_the_plain_path() -> None:
    conv = Conv2d(1, 2, 3)
    before = torch.backends.mkldnn.enabled
    conv(torch.randn(2, 1, 8, 8, requires_grad=True)).sum().backward()
    assert torch.backends.mkldnn.enabled == before
    out = conv(torch.randn(2, 1, 8, 8))  # data: no input gradient wanted, nn.Conv2d's own path
    assert "ImageInputConv" not in type(out.grad_fn).__name__
    with torch.no_grad():
        assert conv(torch.randn(2, 1, 8, 8, requires_grad=True)).grad_fn is None


# -- nets.pool.max_pool2x2 ------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(28, 28), (10, 10), (15, 13)])
def test_max_pool2x2_gives_max_pool2d_values_and_gradients_ties_included(size) -> None:
    import torch.nn.functional as F

    from gandistill.nets.pool import max_pool2x2

    torch.manual_seed(0)
    # ReLU'd maps with flat regions: ties at 0 and at a positive constant, as on a digit's background
    x = torch.relu(torch.randn(3, 4, *size, dtype=torch.double))
    x[:, :, : size[0] // 2, :] = 0.25
    x.requires_grad_(True)
    upstream = torch.randn(3, 4, size[0] // 2, size[1] // 2, dtype=torch.double)
    want = F.max_pool2d(x, 2)
    (want_grad,) = torch.autograd.grad(want, x, upstream)
    got = max_pool2x2(x)
    (got_grad,) = torch.autograd.grad(got, x, upstream)
    assert torch.equal(got, want) and torch.equal(got_grad, want_grad)


def test_exports_see_a_real_max_pool() -> None:
    from gandistill.nets import build_classifier

    model = build_classifier("lenet5_half", 1, (28, 28), 10).eval()
    program = torch.export.export(model, (torch.rand(2, 1, 28, 28),))
    ops = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert any("max_pool2d" in op for op in ops) and not any("maximum" in op for op in ops)


def test_a_classifier_with_the_fast_paths_still_scripts_and_gives_the_same_logits() -> None:
    from gandistill.nets import build_classifier

    model = build_classifier("lenet5", 1, (28, 28), 10).eval()
    scripted = torch.jit.script(model)
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x))


def test_a_lenet5_gives_nn_modules_outputs_and_gradients_in_float32(monkeypatch) -> None:
    """The whole classifier, as training uses it (float32, an input that wants its gradient as in the
    cGAN's teacher guidance): logits and every gradient match the plain-op network to float rounding."""
    import torch.nn.functional as F

    import gandistill.nets.classifiers as classifiers
    import gandistill.nets.conv as conv
    from gandistill.nets import build_classifier

    torch.manual_seed(0)
    model = build_classifier("lenet5", 1, (28, 28), 10)
    x = torch.rand(16, 1, 28, 28, requires_grad=True)

    def grads() -> tuple[torch.Tensor, list[torch.Tensor]]:
        logits = model(x)
        return logits, torch.autograd.grad(logits.logsumexp(1).sum(), [x, *model.parameters()])

    fast_logits, fast = grads()
    assert "ImageInputConv" in type(model.conv1(x).grad_fn).__name__
    monkeypatch.setattr(conv, "FEW_CHANNELS", 0)
    monkeypatch.setattr(classifiers, "max_pool2x2", lambda t: F.max_pool2d(t, 2))
    plain_logits, plain = grads()
    torch.testing.assert_close(fast_logits, plain_logits)
    for a, b in zip(fast, plain, strict=True):
        torch.testing.assert_close(a, b)
