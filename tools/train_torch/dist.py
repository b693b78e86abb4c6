"""Processes and devices: one process (plain python), or torchrun's ranks (DDP / FSDP).

Backend: NCCL when the ranks run on CUDA, gloo on CPU. NCCL's environment is left exactly as
the machine sets it (nothing here reads or writes NCCL_* variables).
Under torchrun (RANK / WORLD_SIZE / LOCAL_RANK set) each rank takes GPU LOCAL_RANK. A plain
single process runs the model unwrapped, except with --fsdp, which needs a process group: a
one-rank group on a free local port is made for it.
"""
import os
import socket
from dataclasses import dataclass


@dataclass
class Dist:
    rank: int
    world: int
    local_rank: int
    device: object        # torch.device
    group: bool           # a process group exists (torchrun, or --fsdp in one process)

    @property
    def main(self):
        return self.rank == 0


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup(device_choice="auto", need_group=False):
    """-> Dist. device_choice: auto (CUDA when there is one), cpu, cuda."""
    import torch
    import torch.distributed as td
    if device_choice == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: this PyTorch sees no CUDA GPU; use --device cpu")
    cuda = device_choice == "cuda" or (device_choice == "auto" and torch.cuda.is_available())
    launched = "WORLD_SIZE" in os.environ and "RANK" in os.environ
    rank = int(os.environ.get("RANK", 0)) if launched else 0
    world = int(os.environ.get("WORLD_SIZE", 1)) if launched else 1
    local = int(os.environ.get("LOCAL_RANK", 0)) if launched else 0
    if cuda:
        if local >= torch.cuda.device_count():
            raise ValueError(f"rank {rank} wants GPU {local} but this machine shows "
                             f"{torch.cuda.device_count()}: start at most that many processes "
                             "per node (torchrun --nproc_per_node)")
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    backend = "nccl" if cuda else "gloo"
    group = False
    if launched:
        td.init_process_group(backend, device_id=device if cuda else None)
        group = True
    elif need_group:
        td.init_process_group(backend, init_method=f"tcp://127.0.0.1:{_free_port()}",
                              rank=0, world_size=1)
        group = True
    return Dist(rank, world, local, device, group)


def teardown(d, ok=True):
    """Leave together: rank 0 hosts the rendezvous store, and a rank still talking to it when
    rank 0 exits aborts (gloo), so a finished run meets at a barrier first. A failed rank
    does not wait (the others may be inside another collective); torchrun stops them."""
    import torch.distributed as td
    if d.group and td.is_initialized():
        try:
            if ok:
                td.barrier()
        finally:
            td.destroy_process_group()


def barrier(d):
    import torch.distributed as td
    if d.group:
        td.barrier()


def mean_across(d, value):
    """The mean over ranks of a Python float (every rank gets it)."""
    if not d.group or d.world == 1:
        return float(value)
    import torch
    import torch.distributed as td
    t = torch.tensor([float(value)], dtype=torch.float64, device=d.device)
    td.all_reduce(t)
    return float(t.item()) / d.world


def wrap(model, d, fsdp=False):
    """The module the loop calls: plain, DDP (default with >1 process) or FSDP2.

    FSDP shards each layer (model.<backbone>.layers[i]) and the root (embedding, final norm,
    head — a tied head shares the embedding's group); gradients are reduce-scattered as means,
    the same average DDP takes."""
    model.to(d.device)
    if fsdp:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard
        mesh = init_device_mesh(d.device.type, (d.world,))
        for layer in _layers(model):
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model
    if d.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP
        ids = [d.device.index] if d.device.type == "cuda" else None
        return DDP(model, device_ids=ids)
    return model


def _layers(model):
    base = getattr(model, model.base_model_prefix, None)
    layers = getattr(base, "layers", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__}: no .{model.base_model_prefix}.layers to "
                         "shard with FSDP")
    return list(layers)


def full(t):
    """A plain tensor of a (possibly FSDP-sharded DTensor) tensor; a collective for DTensors,
    so every rank must call it, in the same order."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:      # pragma: no cover - older torch
        return t
    return t.full_tensor() if isinstance(t, DTensor) else t


def like(param, full_value):
    """`full_value` laid out as `param` (sharded the same way when param is a DTensor)."""
    try:
        from torch.distributed.tensor import DTensor, distribute_tensor
    except ImportError:      # pragma: no cover
        DTensor = None
    if DTensor is not None and isinstance(param, DTensor):
        return distribute_tensor(full_value.to(param.device_mesh.device_type),
                                 param.device_mesh, param.placements)
    return full_value.to(device=param.device, dtype=param.dtype)
