"""The torch side of the LoRA-vs-PEFT tests (tests/unit/test_mamba_ssm_lora_native.py,
test_mamba3_lora_native.py): PEFT adapters with B drawn non-zero, their folder as f32 files, the
Trainer's loss, and the adapters' gradients and N AdamW steps as the engine's trainer runs them."""
import numpy as np


def draw_b(pm, seed, scale):
    """B drawn non-zero (PEFT starts it at 0, which would leave A without gradient) and every
    adapter value rounded to f32 (what the file carries); pm is float64."""
    import torch
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
            if "lora_" in n:
                p.copy_(p.float().double())
    return pm


def peft_with_drawn_b(make_model, config, seed, scale):
    """Stock PEFT with `config` on the float64 model make_model() builds, after seeding torch's
    global generator with `seed` (PEFT draws A from it; unseeded, A -- and so which near-zero
    gradient entries the AdamW comparisons meet -- depended on the tests run before in the
    process), then draw_b."""
    import torch
    from peft import get_peft_model
    torch.manual_seed(seed)
    return draw_b(get_peft_model(make_model(), config), seed, scale)


def adapter_files(pm, folder):
    """PEFT's adapter folder with f32 tensors (the model is float64): {file name: bytes}."""
    from safetensors.torch import load_file, save_file
    pm.save_pretrained(folder)
    st = folder / "adapter_model.safetensors"
    save_file({k: v.float().contiguous() for k, v in load_file(st).items()}, str(st))
    return {f.name: f.read_bytes() for f in folder.iterdir()}


def trainer_loss(model, ids, labels):
    """Mean next-token cross-entropy over the valid labels (the Trainer's: position t predicts
    labels[t + 1], -100 ignored)."""
    import torch
    total = 0
    for row_ids, row_labels in zip(ids, labels):
        logits = model(torch.tensor(row_ids))
        total = total + torch.nn.functional.cross_entropy(
            logits[:-1], torch.tensor(row_labels[1:]), ignore_index=-100, reduction="sum")
    return total / int((np.asarray(labels)[:, 1:] != -100).sum())


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
