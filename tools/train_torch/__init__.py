"""`mambaweb train-torch`: continue a tab-trained (or any transformers-loadable) Mamba-family
checkpoint on PyTorch — one process, DDP across processes (torchrun), or FSDP — and write HF
folders the tab loads back.

  families.py    which checkpoints can go this way (transformers has a class) and loading them
  data.py        the tab's tokenizer, corpus encoding and batch order; each rank's slice
  dist.py        process group, device, DDP / FSDP wrapping, collectives used by the loop
  checkpoint.py  HF folder + optimizer/step state (torch_train_state.safetensors), resume
  loop.py        settings, AdamW groups, the step loop, progress lines

Host-side only (torch, transformers); py_engine is imported for the tab's data and schedule
rules so a step here sees the batch and learning rate the tab would.
"""
