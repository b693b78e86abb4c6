"""The torch side of the LoRA-vs-PEFT tests (tests/unit/test_mamba_ssm_lora_native.py,
test_mamba3_lora_native.py): the adapters' gradients at the start and N AdamW steps over the
adapters alone, as the engine's trainer runs them."""


def adamw_reference(params, loss_fn, adamw, steps=5):
    """params {name: torch leaf}, loss_fn() -> scalar loss. Returns (the starting loss, its
    gradients {name: array}, the loss each step starts from [steps], the parameters after
    {name: array})."""
    import torch
    loss = loss_fn()
    loss.backward()
    grads = {k: p.grad.numpy().copy() for k, p in params.items()}
    opt = torch.optim.AdamW(list(params.values()), **adamw)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        step_loss = loss_fn()
        losses.append(step_loss.item())
        step_loss.backward()
        opt.step()
    return loss.item(), grads, losses, {k: p.detach().numpy().copy() for k, p in params.items()}
