"""What every training loop needs to run under N processes (torchrun / accelerate launch), in one place.

The rule every loop follows: a loop's result is defined by its global batch, never by how many processes
computed it. So

* work that is per item (sampling a batch of responses, scoring them, a no-grad pass) is split into
  chunks, chunk ``c`` goes to rank ``c % world`` (:meth:`Dist.map_chunks`), and the results are gathered
  back in order on every process — a chunk is computed exactly as one process computes it (sampling
  batch ``b`` is seeded ``seed + b`` whoever runs it), so the gathered list equals the single-process one;
* what the loop then decides from them (the data pool, the bins, the batches, the advantages' whitening,
  the KL controller) is computed from the whole gathered data, identically on every process;
* each optimizer step's global batch is split by rank (:meth:`Dist.share`), every process backpropagates
  its share's loss over the **global** normaliser times ``world`` (DDP averages gradients over the
  processes), and the step's metrics are summed across processes (:meth:`Dist.sum`);
* only rank 0 writes files.

With one process every helper is the identity, so a single-process run does exactly what it did before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import LolkitError


@dataclass
class Dist:
    """The process group as the loops see it (one process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    wait: Any = lambda: None  # barrier
    reduce_sum: Any = None  # all-reduce (sum) of a tensor, returning the result
    device: Any = "cpu"  # where collective tensors live (gloo: CPU; NCCL: the GPU)

    @classmethod
    def of(cls, accelerator) -> Dist:
        return cls(accelerator.process_index, accelerator.num_processes, accelerator.wait_for_everyone,
                   lambda t: accelerator.reduce(t, reduction="sum"), accelerator.device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def owns(self, chunk: int) -> bool:
        """Whether chunk ``chunk`` of a sharded pass is this process's (``chunk % world == rank``)."""
        return chunk % self.world == self.rank

    def assemble(self, *tensors):
        """Tensors each process filled at its own chunks' rows (zero elsewhere), summed over the processes: the
        whole on every process, exactly (x + 0 = x)."""
        if self.world == 1:
            return tensors
        import torch

        flat = self.reduce_sum(torch.stack(tensors).to(self.device))
        return tuple(t.to(tensors[0].device) for t in flat.unbind(0))

    def share(self, items: list) -> list:
        """This process's share of a step's global batch: every ``world``-th item from its rank."""
        return items[self.rank :: self.world]

    def sum(self, values: dict[str, float]) -> dict[str, float]:
        """Each key summed over the processes (in float64, so counts stay exact)."""
        if self.world == 1 or not values:
            return dict(values)
        import torch

        keys = list(values)  # every process builds the same dict, in the same order
        total = self.reduce_sum(torch.tensor([float(values[k]) for k in keys], dtype=torch.float64,
                                             device=self.device))
        return dict(zip(keys, total.cpu().tolist(), strict=True))

    @property
    def shards(self):
        """The same process group as :mod:`lolkit.shards` sees it (its JSON gathers and shared work)."""
        from .shards import Shards

        return Shards(self.rank, self.world, self.device)

    def gather(self, obj) -> list:
        """Every process's JSON-able ``obj``, in rank order, on every process (sent as UTF-8 JSON bytes)."""
        return self.shards.gather(obj)

    def map_chunks(self, n: int, size: int, fn) -> list:
        """``fn(c, start, stop) → list`` of the items ``start:stop`` of chunk ``c`` (chunks of ``size``), run
        for this process's chunks (``c % world == rank``, :meth:`lolkit.shards.Shards.share_work`); returns
        every chunk's items, in order, on every process. The items must survive JSON (lists, numbers, strings,
        dicts)."""
        chunks = [(s, min(s + size, n)) for s in range(0, n, max(1, size))]
        if self.world == 1:
            return [x for c, (s, e) in enumerate(chunks) for x in fn(c, s, e)]
        done = self.shards.share_work(range(len(chunks)), lambda c: fn(c, *chunks[c]))
        return [x for c in range(len(chunks)) for x in done[c]]

    def even_chunk(self, n: int) -> int:
        """The chunk size that gives each process one contiguous chunk of ``n`` items."""
        return max(1, -(-n // self.world))


def sum_gradients(dist: Dist, params, bucket: int = 1 << 24) -> None:
    """Sum each parameter's gradient over the processes (in buckets of about ``bucket`` elements). For loops whose
    forward passes call the policy, its value head and a critic separately — DDP only synchronises the
    gradients of a forward run through its wrapper — each process backpropagates its share over the global
    normaliser and this gives every process the whole step's gradient. A parameter without a gradient takes
    part with zeros (a process whose share was empty)."""
    if dist.world == 1:
        return
    import torch

    params = list(params)
    for q in params:
        if q.grad is None:
            q.grad = torch.zeros_like(q)
    start = 0
    while start < len(params):
        stop, size = start, 0
        while stop < len(params) and (stop == start or size + params[stop].numel() <= bucket):
            size += params[stop].numel()
            stop += 1
        group = params[start:stop]
        flat = dist.reduce_sum(torch.cat([q.grad.reshape(-1) for q in group]).to(dist.device))
        offset = 0
        for q in group:
            q.grad.copy_(flat[offset : offset + q.numel()].view_as(q.grad))
            offset += q.numel()
        start = stop


def check_divisible(value: int, world: int, field: str) -> None:
    """A global batch is split evenly over the processes: refuse one that is not, before anything is written."""
    if world > 1 and value % world:
        raise LolkitError(f"{field} {value} is not divisible by the {world} processes: it is the global batch, "
                          "split evenly among them")


def score_sharded(dist: Dist, reward, prompts: list[str], texts: list[str], metas: list | None = None
                  ) -> list[tuple[float, dict]]:
    """``reward.score`` with each process scoring one contiguous chunk (no rank waits on another's scoring),
    gathered in order on every process. One process: one call over everything, as before."""
    if dist.world == 1:
        return reward.score(prompts, texts, metas=metas)

    def part(c: int, s: int, e: int) -> list:
        kw = {"metas": metas[s:e]} if metas is not None else {}
        return [[float(r), comps] for r, comps in reward.score(prompts[s:e], texts[s:e], **kw)]

    return [(r, comps) for r, comps in dist.map_chunks(len(texts), dist.even_chunk(len(texts)), part)]


def sample_sharded(dist: Dist, sample, prompt_ids: list[list[int]], batch_size: int, seed: int
                   ) -> list[tuple[list[int], bool]]:
    """Batched sampling (:func:`lolkit.generation.sample_tokens`, bound in ``sample(ids, batch_size, seed)``)
    with batch ``b`` sampled by rank ``b % world`` under the seed ``seed + b`` it has in one process, so the
    gathered tokens are those one process samples."""
    if dist.world == 1:
        return sample(prompt_ids, batch_size, seed)
    rows = dist.map_chunks(len(prompt_ids), batch_size,
                           lambda c, s, e: [[t, f] for t, f in sample(prompt_ids[s:e], batch_size, seed + c)])
    return [(list(t), bool(f)) for t, f in rows]


def micro_contexts(accelerator, model, n: int) -> list:
    """The contexts of a step's ``n`` micro-batches on this process: DDP's gradient all-reduce is skipped
    (``no_sync``) on all but the last, so the processes synchronise once per optimizer step."""
    import contextlib

    return [accelerator.no_sync(model) if k < n - 1 else contextlib.nullcontext() for k in range(n)]


def resume_note(saved: int | None, world: int) -> str | None:
    """A run resumed under another number of processes continues exactly the same run (every loop's steps are
    defined by the global batch): a note for the console, or None when nothing changed."""
    if saved is None or saved == world:
        return None
    return (f"resuming a run checkpointed under {saved} process{'es' if saved != 1 else ''} with {world}: the "
            "global batch is the same, so the run continues as it would have")
