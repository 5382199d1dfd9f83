"""The training engine shared by every training stage: accelerator set-up, index batches,
checkpoints (atomic save, resume, pause), progress bars and the multi-process helpers.

Every random choice derives from ``oodkit.seeding``; under ``accelerate launch`` / ``torchrun``
each process takes its share of the same global batches, so results do not depend on the
number of processes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch

from oodkit.artifacts import atomic_file
from oodkit.devices import resolve_device
from oodkit.errors import OodkitError, first_line
from oodkit.seeding import numpy_rng, seed_default_generator

if TYPE_CHECKING:
    from accelerate import Accelerator, PartialState
    from rich.console import Console
    from rich.progress import Progress


def make_accelerator(device: str) -> Accelerator:
    """An ``Accelerator`` on the resolved device; bf16 autocast on CUDA, fp32 on the CPU."""
    from accelerate import Accelerator

    device = resolve_device(device)
    return Accelerator(
        cpu=device == "cpu", mixed_precision="bf16" if device.startswith("cuda") else "no"
    )


T = TypeVar("T")


def main_first(
    state: Accelerator | PartialState, open_partial: Callable[[bool], T], overwrite: bool
) -> T:
    """``open_partial(overwrite)`` on the main process, then on the others with ``False``.

    The main process creates (or with ``overwrite`` discards) ``<out>.partial`` before any other
    process reads it, so processes never race on its state file or delete each other's work.
    """
    with state.main_process_first():
        return open_partial(overwrite and state.is_main_process)


def _outcome(compute: Callable[[], T]) -> tuple[str, Any]:
    """("ok", result), ("error", its line) for an OodkitError, ("crash", a line) otherwise;
    a crash is re-raised here after the others have been told."""
    try:
        return "ok", compute()
    except OodkitError as exc:
        return "error", str(exc)
    except Exception as exc:  # noqa: BLE001 - told to every rank, then raised where it was
        return "crash", (exc, first_line(exc, with_type=True))


def _main_outcome(state: Accelerator | PartialState, mine: tuple[str, Any] | None) -> T:
    """Every rank takes the main process's outcome: its result, or its error (one line), or
    a failure naming the main process's crash (the main process re-raises the crash itself)."""
    import torch.distributed as dist

    box: list[Any] = [None]
    if state.is_main_process:
        status, value = mine
        box[0] = (status, value[1] if status == "crash" else value)
    dist.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "crash":
        if state.is_main_process:
            raise mine[1][0]
        raise RuntimeError(f"the main process failed: {value}")
    if status == "error":
        raise OodkitError(value)
    return value


def from_main(state: Accelerator | PartialState, compute: Callable[[], T]) -> T:
    """``compute()`` on the main process only, its result sent to the others (hashing a
    multi-gigabyte model folder once, not on every rank); an error there stops every rank
    with its line, a crash there stops them too."""
    if state.num_processes == 1:
        return compute()
    return _main_outcome(state, _outcome(compute) if state.is_main_process else None)


def agree_on_main(state: Accelerator | PartialState, compute: Callable[[], T]) -> T:
    """``compute()`` on every rank, then every rank takes the main process's outcome: for
    long GPU work whose result may differ in the last bits between ranks (no rank waits
    idle in a collective while the main one computes; its error or result decides)."""
    if state.num_processes == 1:
        return compute()
    return _main_outcome(state, _outcome(compute))


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """``torch.save`` through a temporary file, so a crash never leaves half a checkpoint."""
    atomic_file(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by :func:`save_checkpoint` (tensors only: ``weights_only``); a
    damaged one is one line (the run cannot continue from it)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, pickle and zip errors
        raise OodkitError(
            f"{path} is damaged ({first_line(exc)}); pass --overwrite to start the run again"
        ) from None


def finite_loss(value: float, where: str, lr_flag: str) -> float:
    """``value`` (a mean loss the loop logs anyway, so no extra sync) when finite; else the
    run stops with one line instead of writing a model of NaNs with exit code 0."""
    if not math.isfinite(value):
        raise OodkitError(f"training diverged: the mean loss {where} is {value}; lower {lr_flag}")
    return value


def should_pause(done: int, started_at: int, stop_after: int | None, total: int) -> bool:
    """True when ``stop_after`` units ran in this session and the run is not finished."""
    return stop_after is not None and done - started_at >= stop_after and done < total


def progress_bar(*, disable: bool, unit: str = "", console: Console | None = None) -> Progress:
    """A rich progress bar: description, bar, done/total [unit], time left, a free info field."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    count = "{task.completed}/{task.total}" + (f" {unit}" if unit else "")
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn(count),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        disable=disable,
    )


def epoch_batches(
    n: int,
    batch_size: int,
    seed: int,
    epoch: int,
    stream: int,
    steps: int | None = None,
    rank: int = 0,
    world: int = 1,
    weights: np.ndarray | None = None,
) -> list[list[int]]:
    """This process's shuffled index batches for one epoch, from (seed, epoch, stream) only.

    ``batch_size`` is global. ``steps`` cycles through fresh permutations until that many
    batches exist (outlier streams follow the ID stream's length); with ``weights`` each
    round is instead ``n`` indices drawn with replacement in proportion to them. Under
    several processes rank r takes every ``world``-th index of the same order, batch by
    batch, so the union of the ranks' i-th batches is a single process's i-th batch.
    """
    check_world(batch_size, "--batch-size", world)
    rng = numpy_rng(seed, epoch, stream)
    per_rank = batch_size // world
    order: list[int] = []
    want = None if steps is None else steps * batch_size
    p = None if weights is None else np.asarray(weights, dtype=np.float64) / np.sum(weights)
    while True:
        order.extend((rng.permutation(n) if p is None else rng.choice(n, n, p=p)).tolist())
        if want is None or len(order) >= want:
            break
    mine = order[rank::world]
    count = len(order) // batch_size if steps is None else steps
    return [mine[i * per_rank : (i + 1) * per_rank] for i in range(count)]


def check_world(batch_size: int, what: str, world: int | None = None) -> None:
    """A global batch must split evenly over the processes (refused up front, one line)."""
    world = rank_world()[1] if world is None else world
    if batch_size % world:
        raise OodkitError(f"{what} {batch_size} does not split over {world} processes")


class EpochSeeded(torch.utils.data.Dataset):
    """``dataset`` indexed by (epoch, index), whose items draw their random transforms from a
    generator seeded by (seed, epoch, stream, index): a sample's augmentation does not depend
    on which process, worker or batch loads it, so several processes reproduce one, and one
    loader with persistent workers serves every epoch (a sample drawn twice in an epoch gets
    the same augmentation twice)."""

    def __init__(self, dataset, seed: int, stream: int) -> None:
        self.dataset, self.seed, self.stream = dataset, seed, stream

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        epoch, index = item
        seed_default_generator(self.seed, epoch, self.stream, int(index))
        return self.dataset[index]


class EpochBatches(torch.utils.data.Sampler):
    """A batch sampler whose batches are set for each epoch (:meth:`set`), so a loader and
    its worker processes are built once, not every epoch."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, int]]] = []

    def set(self, epoch: int, batches: list[list[int]]) -> None:
        self.batches = [[(epoch, i) for i in b] for b in batches]

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def loader_kwargs(workers: int, cuda: bool) -> dict[str, Any]:
    """DataLoader settings for ``workers`` processes: kept alive across epochs, prefetching
    four batches each, and pinned host memory on CUDA (asynchronous copies)."""
    extra = {"persistent_workers": True, "prefetch_factor": 4} if workers else {}
    return {"num_workers": workers, "pin_memory": cuda, **extra}


def rank_world() -> tuple[int, int]:
    """(rank, world size) of the initialised process group, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_batch(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """``x`` of every process joined along ``dim`` (rank order), gradients flowing back."""
    _, world = rank_world()
    if world == 1:
        return x
    from torch.distributed import group
    from torch.distributed._functional_collectives import all_gather_single  # autograd-aware

    return all_gather_single(x.movedim(dim, 0).contiguous(), 0, group.WORLD).movedim(0, dim)
