"""Training memory at scale, checked on CPU: the chunked loss equals the plain fp32 loss (value and
gradient), `fsdp.activation_checkpointing` wraps every transformer block through Composer's own
helper and saves less for backward, and gradient alignment runs one microbatch at a time."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("composer")

import torch.nn.functional as F  # noqa: E402
from composer.core.precision import Precision  # noqa: E402
from composer.devices import DeviceCPU  # noqa: E402
from midmix.loaders import IGNORE  # noqa: E402
from midmix.train import models  # noqa: E402
from midmix.train.callbacks import GradientAlignment  # noqa: E402


def plain_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str) -> torch.Tensor:
    targets = torch.full_like(labels, IGNORE)
    targets[:, :-1] = labels[:, 1:]
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE, reduction=reduction)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_chunked_loss_equals_the_plain_loss(monkeypatch, reduction) -> None:
    monkeypatch.setattr(models, "LOSS_CHUNK", 7)  # several chunks and a partial last one
    g = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(3, 11, 50, generator=g, dtype=torch.float64)).float()
    labels = torch.randint(0, 50, (3, 11), generator=g)
    labels[0, :5] = IGNORE  # a masked prompt
    labels[2, 3] = IGNORE
    a, b = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    ours, ref = models.shifted_loss(a, labels, reduction), plain_loss(b, labels, reduction)
    ours.backward()
    ref.backward()
    assert abs(float(ours) - float(ref)) <= 1e-6 * max(1.0, abs(float(ref)))
    assert torch.allclose(a.grad, b.grad, atol=1e-6, rtol=0)
    # bf16 logits: the loss is computed in fp32 and the gradient comes back in bf16.
    c = logits.bfloat16().requires_grad_()
    models.shifted_loss(c, labels, reduction).backward()
    assert c.grad.dtype == torch.bfloat16
    assert abs(
        float(models.shifted_loss(logits.bfloat16(), labels, reduction))
        - float(plain_loss(logits.bfloat16(), labels, reduction))
    ) < 1e-5 * max(1.0, abs(float(ref)))


def saved_bytes(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> int:
    """Bytes autograd keeps for the backward pass of one forward (the activation memory)."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = models.shifted_loss(model(batch), batch["input_ids"])
    loss.backward()
    return total


def test_activation_checkpointing_wraps_every_block_and_saves_less() -> None:
    from composer.distributed.activation_checkpointing import apply_ac, generate_composer_model_check_fn
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper

    torch.manual_seed(0)
    plain = models.build_model("pythia-14m", None, 512, 64, 0)
    wrapped = models.build_model("pythia-14m", None, 512, 64, 0)
    wrapped.load_state_dict(plain.state_dict())
    # What Composer's FSDP2 preparation does with `activation_checkpointing: true`.
    apply_ac(wrapped, True, False, generate_composer_model_check_fn(wrapped))
    count = sum(isinstance(m, CheckpointWrapper) for m in wrapped.modules())
    assert count == plain.model.config.num_hidden_layers == 6
    batch = {"input_ids": torch.randint(0, 512, (4, 64))}
    without, with_ac = saved_bytes(plain, batch), saved_bytes(wrapped, batch)
    assert with_ac < 0.6 * without, (with_ac, without)
    for (name, p), q in zip(plain.named_parameters(), wrapped.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-5), name  # the same gradients


def test_gradient_alignment_runs_one_microbatch_at_a_time() -> None:
    torch.manual_seed(0)
    model = models.build_model("tiny", None, 512, 32, 0)
    state = SimpleNamespace(model=model, precision=Precision.FP32, device=DeviceCPU())
    batch = {"input_ids": torch.randint(0, 512, (10, 32))}
    sizes: list[int] = []
    hook = model.register_forward_pre_hook(lambda _m, args: sizes.append(len(args[0]["input_ids"])))
    grads, _ = GradientAlignment(probe=None, every=1, microbatch=3)._gradient(state, [batch])
    hook.remove()
    assert sizes == [3, 3, 3, 1]
    model.zero_grad()
    models.shifted_loss(model(batch), batch["input_ids"]).backward()
    full = [p.grad.reshape(-1) for p in model.parameters() if p.grad is not None]
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads, full, strict=True))


def test_flops_per_token_follow_the_published_parameter_counts() -> None:
    # The Pythia paper's Table 1: total parameters 70,426,624 and 162,322,944; the input embedding is
    # 50,304 × hidden.
    for arch, total, hidden, layers in (("pythia-70m", 70_426_624, 512, 6), ("pythia-160m", 162_322_944, 768, 12)):
        model = models.build_model(arch, None, 50_304, 2048, 0)
        want = 6 * (total - 50_304 * hidden) + 12 * layers * hidden * 2048
        assert models.flops_per_token(model.model.config, models.matmul_params(model.model), 2048) == want
        batch = {"input_ids": torch.zeros(3, 2048, dtype=torch.long)}
        assert model.flops_per_batch(batch) == 3 * 2048 * want
