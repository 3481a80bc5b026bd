"""Training on several processes (one per GPU) started by ``torchrun``.

``torchrun --nproc_per_node=N -m voltrain train ...`` starts N copies of voltrain and tells
each its place through the environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``). ``init_from_environment`` joins them into one process
group: ``nccl`` on CUDA (rank r then uses ``cuda:LOCAL_RANK``), ``gloo`` on the CPU. The
model is wrapped in ``DistributedDataParallel`` (``wrap_model``), which averages the
gradients over the ranks during backward.

Every collective waits at most ``VOLTRAIN_DIST_TIMEOUT`` seconds (default 1800): rank 0
writes checkpoints and snapshots and validates while the others wait for it at their next
collective, so the limit must cover the longest of those.

Without torchrun every function here describes a single process: rank 0 of 1.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
import torch.distributed as dist

from voltrain.errors import ConfigError, VoltrainError
from voltrain.faults.peers import check_environment, join_process_group

logger = logging.getLogger(__name__)

TIMEOUT_ENV = "VOLTRAIN_DIST_TIMEOUT"
DEFAULT_TIMEOUT_SECONDS = 1800.0
DEFAULT_PEER_TIMEOUT_SECONDS = 300.0

# Whether init_from_environment created the process group (and teardown may destroy it).
_joined = False


class ReplicaDivergenceError(VoltrainError):
    """The model's weights differ between ranks; training on would mix different models."""

    exit_code = 1


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    """The number of processes training together (1 without a process group)."""
    return dist.get_world_size() if is_initialized() else 1


def local_rank() -> int:
    """This process's index on its machine (torchrun's ``LOCAL_RANK``)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Whether this process writes the run's files (rank 0)."""
    return rank() == 0


def is_distributed() -> bool:
    """Whether several processes train together."""
    return world_size() > 1


def timeout_seconds() -> float:
    text = os.environ.get(TIMEOUT_ENV)
    if text is None:
        return DEFAULT_TIMEOUT_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise ConfigError(f"{TIMEOUT_ENV}={text!r}: must be a positive number of seconds")
    return value


def init_from_environment(
    device: torch.device, peer_timeout: float = DEFAULT_PEER_TIMEOUT_SECONDS
) -> torch.device:
    """Join the process group that torchrun describes, if any; return this rank's device.

    ``device`` is the one the user asked for: on CUDA every rank takes ``cuda:LOCAL_RANK``
    instead (an explicit index is an error under torchrun). Does nothing outside torchrun
    or when the group is already initialised. The other ranks must join within
    ``peer_timeout`` seconds (``voltrain.faults.peers``).
    """
    if not check_environment():
        return device
    if device.type == "cuda":
        if device.index is not None:
            raise ConfigError(
                f"--device {device}: under torchrun each rank uses cuda:LOCAL_RANK; pass "
                "--device cuda (or auto)"
            )
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
    if is_initialized():
        return device
    global _joined
    backend = "nccl" if device.type == "cuda" else "gloo"
    join_process_group(backend, peer_timeout, timeout_seconds())
    _joined = True
    logger.info(
        "rank %d of %d joined the %s process group on %s", rank(), world_size(), backend, device
    )
    return device


def teardown() -> None:
    """Leave the process group that ``init_from_environment`` joined (one set up by the
    caller is left alone)."""
    global _joined
    if _joined and is_initialized():
        dist.destroy_process_group()
    _joined = False


def _device() -> torch.device:
    """Where tensors for collectives live: the current GPU for nccl, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast_object(value: Any, source: int = 0) -> Any:
    """Rank ``source``'s ``value`` on every rank (picklable values)."""
    if not is_distributed():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=source)
    return holder[0]


def main_decides(flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank."""
    if not is_distributed():
        return flag
    tensor = torch.tensor([int(flag)], device=_device())
    dist.broadcast(tensor, src=0)
    return bool(tensor.item())


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` is set on any rank (the same answer on every rank)."""
    if not is_distributed():
        return flag
    tensor = torch.tensor([int(flag)], device=_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def mean_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of ``tensor`` over the ranks, on its device; queued without a host sync."""
    if not is_distributed():
        return tensor
    reduced = tensor.detach().clone()
    # Summed, then divided: gloo has no AVG reduction.
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced / world_size()


def wrap_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` in ``DistributedDataParallel`` when several ranks train, else itself.

    Wrapping broadcasts rank 0's weights, so every rank starts from the same model.
    """
    if not is_distributed():
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def parameter_checksum(model: torch.nn.Module) -> torch.Tensor:
    """A float64 fingerprint of the parameters, on their device: the sum over parameters
    k of (k + 1) * (sum + sum of squares), so a change in any tensor shows."""
    parameters = list(model.parameters())
    total = torch.zeros((), dtype=torch.float64, device=parameters[0].device)
    with torch.no_grad():
        for k, parameter in enumerate(parameters):
            values = parameter.detach().to(torch.float64)
            total += (k + 1) * (values.sum() + values.square().sum())
    return total


def verify_replicas(model: torch.nn.Module, iteration: int) -> list[float]:
    """Every rank's parameter checksum; raises ``ReplicaDivergenceError`` on every rank if
    they differ. Collective: all ranks must call it at the same point."""
    checksum = parameter_checksum(model)
    if not is_distributed():
        return [float(checksum)]
    local = checksum.to(_device())
    gathered = [torch.zeros_like(local) for _ in range(world_size())]
    dist.all_gather(gathered, local)
    checksums = [float(value) for value in gathered]
    differing = [r for r, value in enumerate(checksums) if value != checksums[0]]
    if differing:
        raise ReplicaDivergenceError(
            f"the model differs between ranks at iteration {iteration}: parameter checksum "
            f"{checksums[0]!r} on rank 0 but {checksums[differing[0]]!r} on rank "
            f"{differing[0]} (ranks differing from rank 0: {differing}); training stopped "
            "and no checkpoint was written at this iteration"
        )
    logger.info(
        "iteration %d: parameter checksum %r identical on %d ranks",
        iteration,
        checksums[0],
        len(checksums),
    )
    return checksums
