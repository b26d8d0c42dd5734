"""Inference under N processes (``torchrun`` / ``accelerate launch``): each process does its share of the
units of work (generation batches, scoring chunks) and every result is gathered back in unit order.

The units are those of one process — the same batches with the same seeds — so the output a command
writes from the gathered results is the single-process output, byte for byte, and a progress file of
finished units resumes under any number of processes. Work goes round by round: in round ``r``
process ``p`` does the ``(r·N + p)``-th unit still to do; after each round the results are gathered
(as JSON bytes over the process group: no pickle) and the main process records them (appends them to
the command's progress file) in unit order. Only the main process writes files and reports progress.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .errors import LolkitError


@dataclass
class Shards:
    """The process group as an inference command sees it; ``Shards()`` is one process."""

    rank: int = 0
    world: int = 1
    device: object = None  # where gathered tensors live (the process's device: NCCL gathers on GPUs)

    @classmethod
    def current(cls) -> Shards:
        """The launcher's process group (Accelerate reads RANK, WORLD_SIZE, … and sets the process's device:
        gloo on CPU, NCCL on GPUs); one process when none was launched."""
        import torch
        from accelerate import PartialState

        state = PartialState(cpu=not torch.cuda.is_available())
        return cls(state.process_index, state.num_processes, state.device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def gather(self, value) -> list:
        """``value`` (JSON) from every process, in rank order, on every process."""
        from .io import dumps

        if self.world == 1:
            return [json.loads(dumps(value))]
        import torch
        import torch.distributed as dist

        data = torch.frombuffer(bytearray(dumps(value).encode("utf-8")), dtype=torch.uint8).to(self.device)
        sizes = [torch.zeros(1, dtype=torch.long, device=self.device) for _ in range(self.world)]
        dist.all_gather(sizes, torch.tensor([data.numel()], dtype=torch.long, device=self.device))
        width = max(int(s.item()) for s in sizes)
        padded = torch.zeros(width, dtype=torch.uint8, device=self.device)
        padded[: data.numel()] = data
        parts = [torch.empty(width, dtype=torch.uint8, device=self.device) for _ in range(self.world)]
        dist.all_gather(parts, padded)
        return [json.loads(p[: int(s.item())].cpu().numpy().tobytes()) for p, s in zip(parts, sizes, strict=True)]

    def from_main(self, value):
        """The main process's ``value`` on every process (what it read from a progress file: every process
        then agrees on the work left, even when they do not share a filesystem)."""
        return self.gather(value if self.is_main else None)[0]

    def finished(self, read: Callable[[], dict[int, object]]) -> dict[int, object]:
        """``read()`` — the finished units in a command's progress file, by unit — called by the main process
        only, and its result on every process (JSON keys are strings: sent as pairs)."""
        return {unit: value for unit, value in self.from_main(sorted(read().items()) if self.is_main else None)}

    def share_work(self, todo: Iterable[int], work: Callable[[int], object],
                   record: Callable[[int, object], object] | None = None,
                   progress: Callable[[int], None] | None = None) -> dict[int, object]:
        """Do the units ``todo`` (in order) across the processes; returns {unit: result} on every process.

        ``work(unit)`` gives a JSON value; ``record(unit, result)``, on the main process only, stores a
        result as it arrives in unit order (a progress file) and returns what is kept; ``progress(unit)``
        is called for each finished unit. A :class:`LolkitError` raised by ``work`` on any process is
        raised on every process once the units before it are recorded, so the main process reports it
        and no process waits for the others forever."""
        todo = list(todo)
        out: dict[int, object] = {}
        for start in range(0, len(todo), self.world):
            units = todo[start : start + self.world]
            mine = units[self.rank] if self.rank < len(units) else None
            result = error = None
            if mine is not None:
                try:
                    result = work(mine)
                except LolkitError as e:
                    if self.world == 1:
                        raise
                    error = str(e)
            got = self.gather([result, error]) if self.world > 1 else [[result, None]]
            for unit, (value, problem) in zip(units, got, strict=False):
                if problem is not None:
                    raise LolkitError(problem)
                out[unit] = record(unit, value) if record is not None and self.is_main else value
                if progress is not None:
                    progress(unit)
        return out
