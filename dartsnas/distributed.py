"""Data parallelism on torch.distributed, for runs launched with torchrun.

``torchrun --nproc_per_node N -m dartsnas search cnn ...`` starts N copies of the same command. Each
finds its rank in the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, the
rendezvous address), joins the process group (NCCL on CUDA, gloo on CPU) and takes its share of every
batch. Weight gradients are averaged by :class:`~torch.nn.parallel.DistributedDataParallel`; the
architecture step averages its gradients with :meth:`Distributed.average` (one all-reduce per step).
Only rank 0 writes the run directory; every rank reads it to resume, so on several nodes the run
directory must be on a shared filesystem.

:class:`Distributed` is also the single-process case (``world_size == 1``), where every collective is
a no-op, so training loops have no ``if distributed`` branches.
"""
from __future__ import annotations

import datetime
import inspect
import os
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.distributed as dist
from torch import nn

from .errors import ConfigError


def launched_by_torchrun() -> bool:
    """True in a process torchrun started for a group of more than one."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@dataclass
class Distributed:
    """This process's place in the process group (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this object initialised the group and destroys it in close()
    # Flags, counters and pickled objects travel on CPU tensors: with NCCL (GPU tensors only) they go
    # through a gloo group, so that agreeing on a flag each step never waits for the GPU.
    control: Any = None

    @classmethod
    def from_env(cls, device: torch.device = torch.device("cpu")) -> "Distributed":
        """Join the process group torchrun describes in the environment (if any), or an existing one;
        ``device`` (resolved, e.g. by ``train.common.resolve_device``) picks NCCL for CUDA, else gloo."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)),
                       control=_control_group())
        if not launched_by_torchrun():
            return cls()
        if not dist.is_available():
            raise ConfigError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
        missing = [k for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise ConfigError(f"WORLD_SIZE is set but {', '.join(missing)} is not: launch with torchrun")
        local_rank = int(os.environ["LOCAL_RANK"])
        cuda = device.type == "cuda"
        if cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(minutes=30))
        return cls(dist.get_rank(), dist.get_world_size(), local_rank, owns_group=True, control=_control_group())

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def describe(self) -> str:
        """For a run's first log line: '' alone, else the data-parallel group."""
        return f" x {self.world_size} processes (data parallel)" if self.enabled else ""

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs and writes the run directory."""
        return self.rank == 0

    def local(self, device: torch.device) -> torch.device:
        """The device this rank uses for ``device``: data parallel on CUDA, the GPU of its local rank."""
        if device.type == "cuda" and self.enabled:
            return torch.device("cuda", self.local_rank)
        return device

    def average(self, tensors: Sequence[torch.Tensor], differentiable: bool = False) -> list[torch.Tensor]:
        """The mean of ``tensors`` over the ranks, in one all-reduce of their concatenation.

        ``differentiable`` keeps the result in the autograd graph (its backward all-reduces the
        gradient), for quantities that are differentiated again, as in the exact unrolled α gradient.
        """
        tensors = list(tensors)
        if not self.enabled or not tensors:
            return tensors
        flat = torch.cat([t.reshape(-1) for t in tensors])
        if differentiable:
            flat = _all_reduce_differentiable(flat) / self.world_size
        else:
            flat = flat.detach().clone()
            dist.all_reduce(flat)
            flat /= self.world_size
        return [chunk.view_as(t) for chunk, t in zip(flat.split([t.numel() for t in tensors]), tensors)]

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over the ranks (a copy; the argument is left alone)."""
        if not self.enabled:
            return tensor
        out = tensor.detach().clone()
        dist.all_reduce(out, group=self.control if out.device.type == "cpu" else None)
        return out

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any (so all ranks take the same branch)."""
        if not self.enabled:
            return flag
        t = torch.tensor([int(flag)])
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.control)
        return bool(t.item())

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable, our own data only), in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self.control)
        return out

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier(group=self.control)

    def wrap(self, model: nn.Module, ignore: Sequence[nn.Parameter] = (), *,
             broadcast_buffers: bool = True, find_unused: bool = False) -> nn.Module:
        """``model`` in DistributedDataParallel (itself when not distributed). The ``ignore`` parameters
        (α) are left out of DDP's gradient buckets: the architect averages theirs. ``find_unused``: a
        forward pass may leave parameters out (a sampled search), DDP looks for them after each."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        from .autodiff import requires_grad_off
        device_ids = [self.local_rank] if next(model.parameters()).is_cuda else None
        # DDP buckets the parameters that require gradients when it is built: α is left out that way.
        # (Ignoring α by name instead left the buckets unreduced in PyTorch 2.13: tested.)
        # Whether buffers (BatchNorm statistics) are copied from rank 0 before every forward.
        name = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                else "broadcast_buffers")
        with requires_grad_off(list(ignore)):
            return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=find_unused,
                                           **{name: broadcast_buffers})

    def close(self) -> None:
        """Leave the process group if this object joined it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def _control_group() -> Any:
    """A gloo group beside an NCCL one (CPU tensors); the default group when that is gloo already."""
    if dist.get_world_size() > 1 and dist.get_backend() != "gloo":
        return dist.new_group(backend="gloo")
    return None


def _all_reduce_differentiable(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over the ranks, in the autograd graph (its backward sums the gradients over the ranks)."""
    from torch.distributed import _functional_collectives as fc
    if hasattr(fc, "all_reduce_backward"):  # PyTorch >= 2.9: the functional collective has autograd
        return fc.wait_tensor(fc.all_reduce(tensor, "sum", dist.group.WORLD))
    import torch.distributed.nn.functional as dist_nn
    return dist_nn.all_reduce(tensor)


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training-mode statistics are those of the whole global batch, on any device.

    PyTorch's own ``nn.SyncBatchNorm`` runs on GPUs only; this one reduces per-rank counts, means and
    second moments in one differentiable all-reduce (float64, from the numerically stable per-rank
    ``var_mean``), so it also runs on CPU with gloo and matches one process seeing the global batch.
    Outside training, or alone in its group, it is plain BatchNorm.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least a 2D input, got {input.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        dims = [d for d in range(x.dim()) if d != 1]
        n_local = x.numel() // x.shape[1]
        var_l, mean_l = torch.var_mean(x.float(), dims, correction=0)
        n = torch.tensor([float(n_local)], dtype=torch.float64, device=x.device)
        local = torch.cat([n * mean_l.double(), n * (var_l.double() + mean_l.double() ** 2), n])
        total = _all_reduce_differentiable(local)
        C = x.shape[1]
        count = total[-1]
        mean = total[:C] / count
        var = (total[C:2 * C] / count - mean ** 2).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * (count / (count - 1).clamp_min(1))
                self.running_mean.mul_(1 - m).add_(mean.to(self.running_mean.dtype), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)
        shape = [1, C] + [1] * (x.dim() - 2)
        scale = torch.rsqrt(var + self.eps).to(x.dtype).view(shape)
        y = (x - mean.to(x.dtype).view(shape)) * scale
        if self.affine:
            y = y * self.weight.to(x.dtype).view(shape) + self.bias.to(x.dtype).view(shape)  # bf16 in, bf16 out
        return y


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every BatchNorm replaced by :class:`SyncBatchNorm` (parameters and statistics kept)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, SyncBatchNorm):
        sync = SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                             module.track_running_stats)
        ref = next(iter(module.state_dict().values()), None)
        if ref is not None:
            sync.to(device=ref.device, dtype=ref.dtype if ref.is_floating_point() else None)
        sync.load_state_dict(module.state_dict())
        return sync.train(module.training)
    for name, child in module.named_children():
        new = convert_sync_batchnorm(child)
        if new is not child:
            setattr(module, name, new)
    return module
