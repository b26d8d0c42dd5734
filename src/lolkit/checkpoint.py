"""Checkpoints without pickle: weights and optimizer tensors in safetensors, the rest in JSON — one layout
for every loop.

A checkpoint directory is written under a temporary name, fsynced and renamed when complete, so it
is either whole or absent; ``manifest.json`` (every file's size and SHA-256) is written last. A resume
trusts only a checkpoint whose manifest verifies (:func:`usable_checkpoint`): a damaged one — a file
truncated, emptied, deleted or with bytes changed — is reported in one line and the previous complete
one is used instead. Layout of ``checkpoints/step-N/``:

* the weights, loadable on their own: a model in Hugging Face format (full weights, or the peft adapter;
  :class:`ModelWeights`), or a loop's own modules as ``NAME.safetensors`` (:class:`ModuleWeights`, CoLA);
* ``trainer/optimizer.safetensors`` + ``trainer/optimizer.json``: the optimizer state, flattened;
* or, for a model sharded by FSDP, ``shards/rank-R.safetensors`` (each process's shard of the trainable
  weights and of the optimizer tensors) + ``shards/index.json`` (the number of processes, each weight's
  whole shape and placement) in place of the weights and ``optimizer.safetensors``; resumed by as many
  processes (``final/`` and ``best/`` hold the gathered, whole weights);
* or, under DeepSpeed ZeRO-2 / ZeRO-3, the same ``shards/`` with each process's ZeRO partition: its flat fp32
  partition of each parameter group (``partition/G``; the trainable weights) and its optimizer state;
* ``trainer/rng.safetensors``: torch (and CUDA) generator states;
* ``trainer/NAME.safetensors``: the tensors of each extra part of a loop's state (a value head, a critic,
  a mask policy — anything with ``state_dict()`` / ``load_state_dict()``);
* ``trainer/state.json``: step, scheduler state, best validation metric, Python RNG state, the loop's own
  values and each part's values that are not tensors (a KL controller, a data pool, a batch order);
* ``manifest.json``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .errors import LolkitError
from .io import atomic_path, read_json, verify_manifest, warn, write_json
from .models import is_peft

STEP_PREFIX = "step-"
SHARDS = "shards"  # a sharded checkpoint's folder: rank-R.safetensors per process and index.json
SHARDS_FORMAT = "lolkit-shards/1"
ALIAS = "__same_tensor_as__"


def save_model(model, tokenizer, out: Path, state_dict: dict | None = None) -> None:
    """``save_pretrained`` (``state_dict``: the gathered weights of a sharded model)."""
    model.save_pretrained(out, safe_serialization=True, state_dict=state_dict)
    if state_dict is not None:
        _unwrapped_architecture(model, out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)


def _unwrapped_architecture(model, out: Path) -> None:
    """FSDP2 turns a model's class into ``FSDP<Class>``, which ``save_pretrained`` records as the
    architecture; the folder is a plain model's: record the class FSDP wrapped."""
    import torch.distributed.fsdp as fsdp

    cls = type(model)
    if not issubclass(cls, fsdp.FSDPModule) or not (out / "config.json").is_file():
        return
    plain = next(c for c in cls.__mro__[1:] if not issubclass(c, fsdp.FSDPModule))
    cfg = read_json(out / "config.json")
    if cfg.get("architectures") == [cls.__name__]:
        cfg["architectures"] = [plain.__name__]
        write_json(out / "config.json", cfg)


def is_zero3(model) -> bool:
    """Whether DeepSpeed ZeRO-3 partitions the model's parameters (each carries its ``ds_id``)."""
    return any(hasattr(p, "ds_id") for p in model.parameters())


def zero_optimizer(optimizer):
    """DeepSpeed's ZeRO optimizer behind Accelerate's wrapper (None for any other optimizer)."""
    while optimizer is not None:
        if hasattr(optimizer, "fp32_partitioned_groups_flat") or hasattr(optimizer, "single_partition_of_fp32_groups"):
            return optimizer
        optimizer = getattr(optimizer, "optimizer", None)
    return None


def _zero_stage(zo) -> int:
    """The stage of a ZeRO optimizer (:func:`zero_optimizer`): 3 or 2."""
    return 3 if hasattr(zo, "fp32_partitioned_groups_flat") else 2


def _zero_partitions(zo) -> list:
    """This process's flat fp32 partition of each parameter group (ZeRO-3's, or ZeRO-2's)."""
    return zo.fp32_partitioned_groups_flat if _zero_stage(zo) == 3 else zo.single_partition_of_fp32_groups


def optimizer_state(optimizer) -> dict:
    """The optimizer's state dict. Under ZeRO it is the inner torch optimizer's, over this process's flat
    partitions (ZeRO's own state dict carries its loss scaler as an object, for torch.save); ZeRO-3 hands the
    partitions to the inner optimizer only around its step, so they are attached for the time of the read."""
    zo = zero_optimizer(optimizer)
    if zo is None:
        return optimizer.state_dict()
    stage3 = _zero_stage(zo) == 3
    if stage3:
        zo._set_fp32_optimizer_param_groups()
    try:
        return zo.optimizer.state_dict()
    finally:
        if stage3:
            zo._clear_fp32_optimizer_param_groups()


def gather_zero3(model) -> dict:
    """The whole weights of a ZeRO-3 model, on the main process in CPU memory (an empty dict elsewhere): every
    process joins in gathering one parameter at a time, so no process holds more than one whole tensor beyond
    its partition. Keys are the model's ``state_dict`` keys (tied weights: one tensor under both)."""
    from contextlib import nullcontext

    import deepspeed
    import torch.distributed as dist

    main = not dist.is_initialized() or dist.get_rank() == 0
    done: dict[int, torch.Tensor | None] = {}
    out = {}
    for name, t in model.state_dict(keep_vars=True).items():
        if id(t) not in done:  # a buffer is whole already; a partitioned parameter is gathered for the copy
            with deepspeed.zero.GatheredParameters([t], modifier_rank=None) if hasattr(t, "ds_id") else nullcontext():
                done[id(t)] = t.detach().to("cpu", copy=True) if main else None
        if main:
            out[name] = done[id(t)]
    return out


def is_sharded(model) -> bool:
    """Whether the model's parameters are sharded across processes (FSDP2: DTensors)."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def _local(t):
    """This process's part of a tensor (a DTensor's local shard; any other tensor as it is)."""
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


def flatten_optimizer(sd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer state → (tensors for safetensors, the rest for JSON). Nested dicts (bitsandbytes keeps
    its quantisation state in one) are flattened with '/' in the key: ``"3.exp_avg"``,
    ``"3.__bnb_optimizer_quant_state__/absmax1"``."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    first: dict[tuple, str] = {}  # shared tensors (bitsandbytes' quantisation maps) are stored once

    def put(key: str, value: Any) -> None:
        if isinstance(value, torch.Tensor):
            value = _local(value)  # sharded optimizer state (FSDP): this process's part, saved per process
            ident = (value.device.type, value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape))
            if ident in first:
                scalars[key] = {ALIAS: first[ident]}
                return
            first[ident] = key
            tensors[key] = value.detach().cpu().contiguous()
        elif isinstance(value, dict):
            for k, v in value.items():
                put(f"{key}/{k}", v)
        else:
            scalars[key] = value

    for pid, st in sd["state"].items():
        for k, v in st.items():
            put(f"{pid}.{k}", v)
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, v in list(tensors.items()) + list(meta["scalars"].items()):
        if isinstance(v, dict) and ALIAS in v:
            v = tensors[v[ALIAS]]
        pid, path = key.split(".", 1)
        node = state.setdefault(int(pid), {})
        *parents, leaf = path.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def trainable_state(model, names: list[str] | None = None) -> dict[str, torch.Tensor]:
    """The trainable tensors (or those named), cloned to CPU (clones untie shared weights for safetensors)."""
    wanted = set(names) if names is not None else None
    out = {}
    for n, p in model.named_parameters():
        if (wanted is None and p.requires_grad) or (wanted is not None and n in wanted):
            out[n] = p.detach().to("cpu", copy=True).contiguous()
    return out


class ModelWeights:
    """A Hugging Face model (and its tokenizer) as the weights of checkpoints, ``best/`` and ``final/``."""

    def __init__(self, model, tokenizer=None):
        self.model, self.tokenizer = model, tokenizer
        self.gathered: dict | None = None  # a sharded model's whole weights, from gather() to the next save()

    def gather(self) -> None:
        """Under FSDP every process joins in gathering the whole weights on the main process, in CPU memory
        (``save`` then writes them). torch's own full state dict: Accelerate's ``get_state_dict`` asks for
        ``broadcast_from_rank0`` as well, which gives DTensors back over gloo. Under ZeRO-3:
        :func:`gather_zero3`."""
        if is_zero3(self.model):
            self.gathered = gather_zero3(self.model)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        self.gathered = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True,
                                                                                  cpu_offload=True))

    def save(self, folder: Path) -> None:
        gathered, self.gathered = self.gathered, None
        save_model(self.model, self.tokenizer, folder, gathered)

    def load(self, folder: Path) -> None:
        load_trainable_weights(self.model, folder)


class ModuleWeights:
    """A loop's own modules (CoLA's), each as ``NAME.safetensors``."""

    def __init__(self, modules: dict):
        self.modules = modules

    def save(self, folder: Path) -> None:
        for name, module in self.modules.items():
            save_file({k: v.detach().to("cpu", copy=True).contiguous() for k, v in module.state_dict().items()},
                      folder / f"{name}.safetensors")

    def load(self, folder: Path) -> None:
        for name, module in self.modules.items():
            module.load_state_dict(load_file(folder / f"{name}.safetensors"), strict=True)


class Trainable:
    """A module's trainable tensors (or the named ones) as a checkpoint part: a separate critic, NLPO's
    mask policy — only what can differ from the loaded model is saved."""

    def __init__(self, module, names: list[str] | None = None):
        self.module, self.names = module, names

    def state_dict(self) -> dict:
        return trainable_state(self.module, self.names)

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state, strict=False)


def save_shard(folder: Path, rank: int, model, optimizer) -> None:
    """This process's part of a sharded checkpoint (FSDP, ZeRO), every process calls it: its shard of each
    trainable weight (``model/NAME``; under ZeRO its flat fp32 partition of each parameter group,
    ``partition/G``) and of the optimizer state (``optimizer/KEY``, keys as in :func:`flatten_optimizer`) in
    ``folder/rank-R.safetensors``; :func:`save_checkpoint` then moves the files into the checkpoint."""
    folder.mkdir(parents=True, exist_ok=True)
    zo = zero_optimizer(optimizer)
    if zo is not None:
        tensors = {f"partition/{g}": t.detach().to("cpu", copy=True).contiguous()
                   for g, t in enumerate(_zero_partitions(zo))}
    else:
        tensors = {f"model/{n}": _local(p).detach().to("cpu", copy=True).contiguous()
                   for n, p in model.named_parameters() if p.requires_grad}
    tensors.update({f"optimizer/{k}": v.clone() for k, v in flatten_optimizer(optimizer_state(optimizer))[0].items()})
    save_file(tensors, folder / f"rank-{rank}.safetensors")


def _shard_index(model, world: int, optimizer) -> dict:
    from torch.distributed.tensor import DTensor

    index = {"format": SHARDS_FORMAT, "world_size": world, "files": [f"rank-{r}.safetensors" for r in range(world)],
             "weights": {n: {"shape": list(getattr(p, "ds_shape", p.shape)),
                             "placements": [str(x) for x in p.placements] if isinstance(p, DTensor) else None}
                         for n, p in model.named_parameters() if p.requires_grad}}
    zo = zero_optimizer(optimizer)
    if zo is not None:  # the partitions' sizes depend on the number of processes (and on the padding ZeRO adds)
        index["deepspeed"] = {"zero_stage": _zero_stage(zo),
                              "partition_numel": [t.numel() for t in _zero_partitions(zo)]}
    return index


def save_checkpoint(path: Path, weights, optimizer, scheduler, step: int, state: dict, parts: dict | None = None,
                    shards: Path | None = None, world: int = 1) -> None:
    """Write ``path`` atomically: ``weights`` (``.save(folder)``), the optimizer and scheduler (None for a
    constant learning rate), the RNG states, ``state`` (JSON values of the loop) and ``parts`` — each an
    object with ``state_dict()`` whose tensors go to ``trainer/NAME.safetensors`` and the rest to
    ``state.json``. ``shards``: a sharded model's checkpoint — the folder where the ``world`` processes
    wrote their :func:`save_shard` files, which go to ``shards/`` with ``index.json`` in place of the
    weights and the optimizer tensors."""
    with atomic_path(path, is_dir=True, manifest=True) as tmp:
        t = tmp / "trainer"
        if shards is None:
            weights.save(tmp)
            t.mkdir()
            tensors, meta = flatten_optimizer(optimizer.state_dict())
            save_file(tensors, t / "optimizer.safetensors")
        else:
            t.mkdir()
            meta = flatten_optimizer(optimizer_state(optimizer))[1]
            (tmp / SHARDS).mkdir()
            index = _shard_index(weights.model, world, optimizer)
            for name in index["files"]:
                os.replace(shards / name, tmp / SHARDS / name)
            write_json(tmp / SHARDS / "index.json", index)
        (t / "optimizer.json").write_text(json.dumps(meta))
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                rng[f"cuda{i}"] = s
        save_file(rng, t / "rng.safetensors")
        values = {}
        for name, part in (parts or {}).items():
            sd = part.state_dict()
            found = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in sd.items() if isinstance(v, torch.Tensor)}
            if found:
                save_file(found, t / f"{name}.safetensors")
            values[name] = {k: v for k, v in sd.items() if not isinstance(v, torch.Tensor)}
        py_state = random.getstate()
        write_json(t / "state.json", {"step": step, "scheduler": scheduler.state_dict() if scheduler is not None else None,
                                      "python_rng": [py_state[0], list(py_state[1]), py_state[2]], **state,
                                      "parts": values})


def load_trainable_weights(model, path: Path) -> None:
    """Load the weights saved by :func:`save_model` back into ``model`` in place."""
    if is_peft(model):
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(path / "adapter_model.safetensors"))
        return
    state: dict[str, torch.Tensor] = {}
    for f in sorted(path.glob("*.safetensors")):
        state.update(load_file(f))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {k for k in missing if "lm_head" in k or "embed" in k}
    if unexpected or set(missing) - tied:
        raise RuntimeError(f"checkpoint {path} does not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})")


def _sharding(index: dict | None) -> str:
    """How a checkpoint's weights were saved, from its shard index, in words."""
    if index is None:
        return "whole (saved without FSDP or DeepSpeed)"
    if "deepspeed" in index:
        return f"partitioned over {index.get('world_size')} processes (DeepSpeed ZeRO-{index['deepspeed']['zero_stage']})"
    return f"sharded over {index.get('world_size')} processes (FSDP)"


def load_shard(path: Path, rank: int, world: int, model, optimizer) -> None:
    """Load this process's shard of a sharded checkpoint into the sharded ``model`` and its optimizer. The
    checkpoint must be sharded as this run shards (FSDP, or the same ZeRO stage) over as many processes: the
    shards are FSDP's split of each tensor (dimension 0) among that many processes, or ZeRO's padded flat
    partitions of each parameter group."""
    from torch.distributed.tensor import DTensor

    index_path = path / SHARDS / "index.json"
    index = read_json(index_path) if index_path.is_file() else None
    zo = zero_optimizer(optimizer)
    stage = None if zo is None else _zero_stage(zo)
    run = (f"partitions it with DeepSpeed ZeRO-{stage}" if stage else "shards the model" if is_sharded(model)
           else "does not shard the model")
    saved = None if index is None else index["deepspeed"].get("zero_stage") if "deepspeed" in index else "fsdp"
    if index is None or saved != (stage or ("fsdp" if is_sharded(model) else None)):
        raise LolkitError(f"{path}: the checkpoint is {_sharding(index)} and this run {run}: resume it launched as it "
                          "was, or start again with --overwrite")
    if index.get("format") != SHARDS_FORMAT or index.get("world_size") != world:
        raise LolkitError(f"{path}: the checkpoint is {_sharding(index)} and this run has {world}: resume it with "
                          f"{index.get('world_size')} processes (the same launch command)")
    state = load_file(path / SHARDS / f"rank-{rank}.safetensors")
    meta = json.loads((path / "trainer" / "optimizer.json").read_text())
    sd = unflatten_optimizer({k[len("optimizer/"):]: v for k, v in state.items() if k.startswith("optimizer/")}, meta)
    if zo is not None:
        _load_zero_partition(zo, [state[f"partition/{g}"] for g in range(len(_zero_partitions(zo)))], sd)
        return
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad:
                _local(p).copy_(state[f"model/{n}"])
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for pid, values in sd["state"].items():
        p = params[pid]
        if not isinstance(p, DTensor):
            continue
        for k, v in values.items():  # the per-element states (Adam's moments) are shards of the parameter
            if isinstance(v, torch.Tensor) and v.dim() and tuple(v.shape) == tuple(p.to_local().shape):
                values[k] = DTensor.from_local(v.to(p.device), p.device_mesh, p.placements, run_check=False,
                                               shape=p.shape, stride=p.stride())
    optimizer.load_state_dict(sd)


def _load_zero_partition(zo, partitions: list[torch.Tensor], sd: dict) -> None:
    """This process's fp32 partitions and inner optimizer state back into DeepSpeed's ZeRO optimizer, and the
    model's weights from them: ZeRO-3 through its own rigid-checkpoint loader (fed tensors, not a torch.save
    file), ZeRO-2 by copying the partitions and all-gathering the weights."""
    if _zero_stage(zo) == 3:
        from deepspeed.checkpoint.constants import FP32_FLAT_GROUPS, LOSS_SCALER, OPTIMIZER_STATE_DICT

        zo._rigid_load_state_dict({LOSS_SCALER: zo.loss_scaler, "dynamic_loss_scale": zo.dynamic_loss_scale,
                                   "overflow": False, OPTIMIZER_STATE_DICT: sd, FP32_FLAT_GROUPS: partitions})
        return
    zo.optimizer.load_state_dict(sd)
    with torch.no_grad():
        for current, saved in zip(zo.single_partition_of_fp32_groups, partitions, strict=True):
            current.copy_(saved)
    zo.update_lp_params()


def load_checkpoint(path: Path, weights, optimizer, scheduler, parts: dict | None = None, rank: int = 0,
                    world: int = 1) -> dict:
    """Restore what :func:`save_checkpoint` wrote into the live objects; returns the state's JSON values.
    A sharded checkpoint, or a sharded model, goes through :func:`load_shard` (``rank`` of ``world``)."""
    t = path / "trainer"
    if (path / SHARDS / "index.json").is_file() or zero_optimizer(optimizer) is not None \
            or (isinstance(weights, ModelWeights) and is_sharded(weights.model)):
        load_shard(path, rank, world, weights.model, optimizer)
    else:
        weights.load(path)
        meta = json.loads((t / "optimizer.json").read_text())
        optimizer.load_state_dict(unflatten_optimizer(load_file(t / "optimizer.safetensors"), meta))
    rng = load_file(t / "rng.safetensors")
    torch.set_rng_state(rng["torch"])
    if torch.cuda.is_available():
        torch.cuda.set_rng_state_all([rng[k] for k in sorted(rng) if k.startswith("cuda")])
    state = read_json(t / "state.json")
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    a, b, c = state["python_rng"]
    random.setstate((a, tuple(b), c))
    for name, part in (parts or {}).items():
        found = t / f"{name}.safetensors"
        part.load_state_dict({**(load_file(found) if found.is_file() else {}), **state["parts"].get(name, {})})
    return state


def step_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """The ``step-N`` directories, oldest first (a killed write never carries the final name; whether a
    checkpoint is complete and intact is for :func:`usable_checkpoint` to say)."""
    found = []
    if ckpt_dir.is_dir():
        for p in ckpt_dir.iterdir():
            if p.name.startswith(STEP_PREFIX) and p.is_dir():
                try:
                    found.append((int(p.name[len(STEP_PREFIX):]), p))
                except ValueError:
                    continue
    return sorted(found)


def usable_checkpoint(candidates: list[tuple[int, Path]], where: Path | str) -> tuple[int, Path] | None:
    """The newest of ``candidates`` (``(step, directory)``, oldest first) whose manifest verifies. Each
    newer one that fails is reported in one line and skipped; when every candidate fails, the resume is
    refused in one line (None only when there are no candidates: the run starts from the beginning)."""
    failed = []
    for step, path in reversed(candidates):
        problem = verify_manifest(path)
        if problem is None:
            return step, path
        warn(f"checkpoint {path} fails verification ({problem}); skipping it")
        failed.append(f"{path.name}: {problem}")
    if failed:
        raise LolkitError(f"{where}: no checkpoint passes verification ({'; '.join(failed)}); nothing safe to resume "
                          "from: start again with --overwrite")
    return None


def prune(ckpt_dir: Path, keep: int) -> None:
    for _, p in step_checkpoints(ckpt_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(p, ignore_errors=True)
