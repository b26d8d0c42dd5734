"""The ``lolkit`` command line. Each command parses its options and calls one library function.

Heavy libraries (torch, transformers) are imported inside the commands, so ``lolkit --help`` is fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from .algorithms import algo_help
from .config import DEFAULT_LR, TrainConfig
from .data.loader import check_records_output
from .errors import LolkitError
from .io import check_output

app = typer.Typer(name="lolkit", no_args_is_help=True, add_completion=False, rich_markup_mode=None,
                  help="Fine-tune language models with rewards: offline RL (A-LoL family), preferences, online RL.")
preprocess_app = typer.Typer(no_args_is_help=True, help="Turn raw data into records in lolkit's data contract.")
app.add_typer(preprocess_app, name="preprocess")
cola_app = typer.Typer(no_args_is_help=True, help="Latent-action control (CoLA) over a frozen causal LM (docs/cola.md).")
app.add_typer(cola_app, name="cola")

_state = {"debug": False}


def _show_version(value: bool) -> None:
    if value:
        from . import __version__

        print(f"lolkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks for errors.")] = False,
          version: Annotated[bool, typer.Option("--version", help="Print lolkit's version and exit.", is_eager=True,
                                                callback=_show_version)] = False) -> None:
    _state["debug"] = debug


def _console():
    """stdout; silent in the processes other than the main one of a torchrun / accelerate launch."""
    from rich.console import Console

    from .progress import main_process

    return Console(quiet=not main_process())


DATA_FORMATS = ("JSONL(.gz), JSON, CSV, Parquet, a save_to_disk folder, a folder of data files or a cached Hub "
                "dataset; PATH:SPLIT picks a split (docs/data.md).")
OUTPUT_FORMATS = "JSONL, or Parquet when it ends in .parquet, a save_to_disk folder when it ends in .arrow or /."
_D = TrainConfig()  # the config defaults, shown in --help (no heavy imports: dataclasses only)
_LR_HELP = "; ".join(f"{loop} {full:.0e} ({adapter:.0e} with --lora/--qlora)".replace("e-0", "e-")
                     for loop, (full, adapter) in DEFAULT_LR.items() if adapter is not None)

Sets = Annotated[list[str] | None, typer.Option("--set", help="Override any config key: section.key=value (repeatable). "
                                                               "[default: no overrides]")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]


@app.command(help="Train a policy offline on records (default: the built-in task with the tiny model), online or from "
                  "feedback.\n\nAlgorithms: " + algo_help() + " (docs/online.md, docs/feedback.md; the README's "
                  "algorithm table).")
def train(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config (sections: model, data, optim, algo, eval, ppo, a2c, trpo, feedback). "
                                                                             "[default: none: defaults + options]")] = None,
    algo: Annotated[str | None, typer.Option(help=f"Algorithm (listed above). [default: {_D.algo.name}]")] = None,
    model: Annotated[str | None, typer.Option(help="Model directory, run directory (its final/), short name (tiny, smollm2) "
                                                  f"or hub id. [default: {_D.model.name}]")] = None,
    data: Annotated[str | None, typer.Option(help="Training records: " + DATA_FORMATS + " [default: the built-in task, "
                                                 f"{_D.data.task}]")] = None,
    val_data: Annotated[str | None, typer.Option(help="Validation records or prompts, in any format --data reads. [default: "
                                                     f"{_D.data.val_fraction:.0%} of the training prompts, held out]")] = None,
    output_dir: Annotated[str | None, typer.Option(help="Run directory. [default: runs/ALGO-DATA-seedSEED]")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Optimizer steps. [default: epochs × steps per epoch]")] = None,
    epochs: Annotated[float | None, typer.Option(help="Passes over the data when --max-steps is not given. "
                                                    f"[default: {_D.epochs:g}]")] = None,
    batch_size: Annotated[int | None, typer.Option(help=f"Examples per optimizer step. [default: {_D.batch_size}]")] = None,
    micro_batch_size: Annotated[int | None, typer.Option(help="Examples per forward pass (gradient accumulation). "
                                                              "[default: --batch-size; ppo: ppo.minibatch_size]")] = None,
    lr: Annotated[float | None, typer.Option(help=f"Peak learning rate. [default: {_LR_HELP}]")] = None,
    seed: Annotated[int | None, typer.Option(help=f"Random seed. [default: {_D.seed}]")] = None,
    reward: Annotated[str | None, typer.Option(help="Reward for validation and the value estimate: a task, preset, YAML "
                                                   "file, module:function or file.py:function. [default: the built-in "
                                                   "task's reward without --data, else none]")] = None,
    clip: Annotated[str | None, typer.Option(help="Ratio clip ε: clamp to [1−ε, 1+ε]; 'off' for no clip. "
                                                 f"[default: {_D.algo.clip}]")] = None,
    kl_beta: Annotated[float | None, typer.Option(help=f"β of a_lol_kl's KL term. [default: {_D.algo.kl_beta}]")] = None,
    sampling: Annotated[str | None, typer.Option(help="Training pool order: none | good_priority | good_random | "
                                                     f"all_priority. [default: {_D.algo.sampling}]")] = None,
    value_source: Annotated[str | None, typer.Option(help="V(x) from: reference (the paper's) | data (cross-fitted) | "
                                                         "auto (reference with a reward, else data). "
                                                         f"[default: {_D.algo.value_source}]")] = None,
    shift_rewards: Annotated[bool, typer.Option(help="Shift rewards by their minimum when an algorithm needs R >= 0.")] = False,
    lora: Annotated[bool, typer.Option(help="Train a LoRA adapter.")] = False,
    qlora: Annotated[bool, typer.Option(help="Train a LoRA adapter over a 4-bit (nf4) base.")] = False,
    gradient_checkpointing: Annotated[bool, typer.Option(help="Trade compute for memory.")] = False,
    eval_every: Annotated[int | None, typer.Option(help="Validate every N optimizer steps (0: at the end only). "
                                                       f"[default: {_D.eval_every}]")] = None,
    save_every: Annotated[int | None, typer.Option(help="Checkpoint every N optimizer steps (0: at the end only). "
                                                       f"[default: {_D.save_every}]")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --output-dir from its last checkpoint.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run directory.")] = False,
    report_to: Annotated[str | None, typer.Option(help="Experiment trackers, comma-separated: tensorboard, wandb, mlflow, "
                                                       "trackio (offline; docs/evaluation.md). [default: none]")] = None,
    sets: Sets = None,
    quiet: Quiet = False,
) -> None:
    from .config import TrainConfig, build, load_yaml, parse_overrides

    flags: dict = {}

    def put(path: str, value) -> None:
        if value is None:
            return
        node = flags
        *head, last = path.split(".")
        for h in head:
            node = node.setdefault(h, {})
        node[last] = value

    for path, value in [("algo.name", algo), ("model.name", model), ("data.train", data), ("data.val", val_data),
                        ("output_dir", output_dir), ("max_steps", max_steps), ("epochs", epochs),
                        ("batch_size", batch_size), ("micro_batch_size", micro_batch_size), ("optim.lr", lr),
                        ("seed", seed), ("reward", reward), ("eval_every", eval_every), ("save_every", save_every),
                        ("model.lora", lora or None), ("model.qlora", qlora or None),
                        ("model.gradient_checkpointing", gradient_checkpointing or None),
                        ("algo.clip", clip), ("algo.kl_beta", kl_beta), ("algo.sampling", sampling),
                        ("algo.value_source", value_source), ("data.shift_rewards", shift_rewards or None),
                        ("report_to", report_to)]:
        put(path, value)
    layers = [load_yaml(config)] if config else []
    cfg = build(TrainConfig, *layers, parse_overrides(sets or []), flags, source=str(config or "options"))
    from .run import read_metrics
    from .train import train as run_train

    run = run_train(cfg, resume=resume, overwrite=overwrite, quiet=quiet)
    rows = read_metrics(run)
    last = rows[-1] if rows else {}
    extra = "".join(f", {k} {last[k]:.4f}" for k in ("loss_per_token", "val_reward", "val_nll", "val_accuracy") if last.get(k) is not None)
    _console().print(f"[green]done[/green]: {run} (step {last.get('step')}, loss {last.get('loss', float('nan')):.4f}{extra})")


@app.command("eval")
def eval_(
    model: Annotated[str, typer.Option(help="Run directory, model directory or short name.")],
    data: Annotated[str | None, typer.Option(help="Records or prompts to answer, in any format train --data reads "
                                                  "(default: the built-in task's test split).")] = None,
    reward: Annotated[str | None, typer.Option(help="Reward to score with (default: the run's when it is a task, preset or code-free YAML).")] = None,
    output_dir: Annotated[str | None, typer.Option(help="Where to write generations.jsonl and summary.json (default: RUN/eval).")] = None,
    checkpoint: Annotated[str, typer.Option(help="For run directories: final or best.")] = "final",
    sample: Annotated[bool, typer.Option("--sample/--greedy", help="Sample instead of greedy decoding.")] = False,
    num_samples: Annotated[int, typer.Option(help="Samples per prompt (with --sample).")] = 1,
    max_new_tokens: Annotated[int | None, typer.Option(help="Maximum response length in tokens. [default: "
                                                                f"{_D.eval.max_new_tokens}; CoLA runs 32]")] = None,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 1.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling threshold.")] = 1.0,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing evaluation.")] = False,
    metrics: Annotated[str, typer.Option(help="Optional metrics, comma-separated: self_bleu, qd, ppl, rouge, bleu, chrf, "
                                              "meteor, coverage, or any evaluate module (a local script or "
                                              "folder, a Hub metric already cached); 'default' (all that apply "
                                              "but meteor, which loads WordNet: ~15 s), 'all' or 'none'.")] = "default",
    ppl_model: Annotated[str | None, typer.Option(help="Model scoring the perplexity of the responses (default: the evaluated one).")] = None,
    sets: Sets = None,
    quiet: Quiet = False,
) -> None:
    """Generate for every test prompt, score the answers, compute the metrics (docs/evaluation.md), write
    generations.jsonl and summary.json. Resumable: a re-run after an interruption reuses the finished batches.
    On a CoLA run directory (docs/cola.md): latent-action sampling against token sampling from the base,
    with quality-diversity (--num-samples M, default 4 there; `--set eval.max_prompts=N`)."""
    from .cola.run import is_cola_run

    if is_cola_run(model):
        return _eval_cola(model, data, reward, output_dir, checkpoint, num_samples, max_new_tokens, temperature,
                          overwrite, sets, quiet)
    from .config import parse_overrides
    from .evaluate import EvalOptions, evaluate

    if output_dir is not None:
        check_output(output_dir, is_dir=True, what="--output-dir")

    ov = parse_overrides(sets or [])
    ev = ov.setdefault("eval", {})
    ev.update({"do_sample": sample, "num_samples": num_samples, "temperature": temperature, "top_p": top_p})
    if max_new_tokens is not None:
        ev["max_new_tokens"] = max_new_tokens
    summary = evaluate(EvalOptions(model, output_dir, data, reward, checkpoint, overwrite, ov, metrics, ppl_model),
                       quiet=quiet, log=lambda m: _console().print(f"[dim]{m}[/dim]"))
    _print_summary(summary)


def _print_summary(summary: dict) -> None:
    from rich.table import Table

    t = Table(title="evaluation")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k, v in summary.items():
        if isinstance(v, (int, float)):
            t.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    _console().print(t)


def _eval_cola(run, data, reward, output_dir, checkpoint, num_samples, max_new_tokens, temperature, overwrite, sets,
               quiet) -> None:
    from rich.table import Table

    from .cola.evaluate import ColaEvalOptions, comparison_rows, evaluate_cola
    from .config import parse_overrides

    ev = parse_overrides(sets or []).get("eval", {})
    opts = ColaEvalOptions(run, output_dir, data, reward, checkpoint, num_samples if num_samples > 1 else 4,
                           ev.get("max_prompts"), max_new_tokens or 32, temperature, int(ev.get("seed", 0)), overwrite)
    summary = evaluate_cola(opts, quiet=quiet)
    g = summary["generation"]
    t = Table(title=f"CoLA: latent-action ({summary['run']['policy']} policy) vs token sampling, "
                    f"N={g['num_prompts']} prompts x M={g['num_samples']} samples")
    for c, j in (("metric", "left"), ("latent actions", "right"), ("token sampling (base)", "right")):
        t.add_column(c, justify=j)
    for row in comparison_rows(summary):
        t.add_row(*row)
    _console().print(t)
    _console().print(f"wrote {opts.output_dir or run + '/eval'}/summary.json and generations.jsonl")


@preprocess_app.command("builtin")
def preprocess_builtin(
    output_dir: Annotated[str, typer.Option(help="Directory for train.jsonl, val.jsonl, test.jsonl.")],
    task: Annotated[str, typer.Option(help="Built-in task.")] = "colours",
    seed: Annotated[int, typer.Option(help="Seed of the simulated annotators.")] = 0,
) -> None:
    """Write a built-in task's splits as records."""
    from .preprocess import preprocess_builtin as run

    check_output(output_dir, is_dir=True, what="--output-dir")

    counts = run(task, output_dir, seed)
    _console().print(f"wrote {output_dir}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


@preprocess_app.command("jsonl")
def preprocess_jsonl(
    input: Annotated[str, typer.Argument(help="Records in the contract or a TRL format (standard or conversational): "
                                              + DATA_FORMATS)],
    output: Annotated[str, typer.Option(help="Records in the contract's field names: " + OUTPUT_FORMATS)],
    label_reward: Annotated[bool, typer.Option(help="Read TRL unpaired-preference (KTO) records, turning 'label' into "
                                                    "a reward: true → 1, false → 0 (refused without this).")] = False,
) -> None:
    """Validate a dataset and normalise it into the data contract."""
    from .preprocess import preprocess_jsonl as run

    check_records_output(output)
    info = run(input, output, label_reward=label_reward)
    _console().print(f"wrote {output}: {info['records']} {info['kind']} records", highlight=False, soft_wrap=True)


@preprocess_app.command("pairs")
def preprocess_pairs(
    input: Annotated[str, typer.Argument(help="Scored response records, several per prompt (lolkit generate, then "
                                              "lolkit reward): " + DATA_FORMATS)],
    output: Annotated[str, typer.Option(help="Preference or ranking records: " + OUTPUT_FORMATS)],
    kind: Annotated[str, typer.Option(help="preference (pairs, for dpo) | ranking (for pro).")] = "preference",
    mode: Annotated[str, typer.Option(help="Pairs per prompt: best-worst (highest vs lowest reward) | all (every "
                                           "pair of answers).")] = "best-worst",
    margin: Annotated[float, typer.Option(help="Keep a pair only when its rewards differ by more than this.")] = 0.0,
    top_k: Annotated[int | None, typer.Option(help="Rankings of the K best answers (prompts with fewer are dropped; "
                                                    "pro needs one length). [default: all answers]")] = None,
    keep_ties: Annotated[bool, typer.Option(help="Keep pairs, and ranked answers, with equal rewards (dropped and "
                                                 "counted by default).")] = False,
) -> None:
    """Scored samples → preference pairs or rankings: generate → reward → pairs → train --algo dpo | pro."""
    from .preprocess import preprocess_pairs as run

    check_records_output(output)
    info = run(input, output, kind=kind, mode=mode, margin=margin, top_k=top_k, keep_ties=keep_ties)
    dropped = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in info["dropped"].items())
    _console().print(f"wrote {output}: {info['records']} {info['kind']} records from {info['prompts']} prompts "
                     f"({info['answers']} scored answers" + (f"; dropped {dropped}" if dropped else "") + ")",
                     highlight=False, soft_wrap=True)


@preprocess_app.command("split")
def preprocess_split(
    input: Annotated[str, typer.Argument(help="Records to split: " + DATA_FORMATS)],
    output_dir: Annotated[str, typer.Option("--output-dir", "-o", help="Directory for <part>.jsonl + stats.json.")],
    parts: Annotated[str, typer.Option(help="NAME=SIZE,…: shares (train=0.8,val=0.1,test=0.1) or prompt counts, one "
                                            "part may be 'rest' (rm=600,test=200,policy=rest).")],
    seed: Annotated[int, typer.Option(help="Seed of the prompt order.")] = 0,
) -> None:
    """Split a dataset into disjoint parts by prompt: all records of a prompt go to the same part."""
    from .preprocess import preprocess_split as run

    check_output(output_dir, is_dir=True, what="--output-dir")
    _wrote(output_dir, run(input, output_dir, parts, seed))


# --- corpus recipes (src/lolkit/data/recipes; documented in data_recipes/<name>.md) -----------------------
def _writable_dir(value: str | None) -> str | None:
    return None if value is None else str(check_output(value, is_dir=True, what="--output-dir"))


OutDir = Annotated[str, typer.Option("--output-dir", "-o", callback=_writable_dir,
                                     help="Directory for <split>.jsonl + stats.json (replaced as a whole).")]
HistWords = Annotated[int | None, typer.Option(help="Trim the oldest history turns to fit this many words (A-LoL: 400 DialoGPT tokens).")]
HistTurns = Annotated[int | None, typer.Option(help="Keep at most this many history turns. [default: all]")]
Sep = Annotated[str, typer.Option(help="Separator between knowledge and turns in the prompt (DialoGPT's EOS in A-LoL).")]


def _recipe(name: str):
    from .data.recipes import get_recipe

    return get_recipe(name)


def _wrote(output_dir: str, counts: dict[str, int]) -> None:
    import json

    dropped = json.loads((Path(output_dir) / "stats.json").read_text(encoding="utf-8")).get("dropped") or {}
    gone = f"; dropped {', '.join(f'{k} {v}' for k, v in dropped.items())}" if dropped else ""
    _console().print(f"wrote {output_dir}: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + gone + " (see stats.json)",
                     highlight=False, soft_wrap=True)


@preprocess_app.command("hh")
def preprocess_hh_cmd(
    input: Annotated[str, typer.Argument(help="The raw release (a .jsonl.gz file, a folder of them, a cached "
                                               "Anthropic/hh-rlhf) or PRO's unzipped data/ folder.")],
    output_dir: OutDir,
    kind: Annotated[str | None, typer.Option(help="ranking (all responses + rewards; PRO's files only) | preference | "
                                                   "response. [default: ranking for PRO's files, preference for the raw release]")] = None,
    chosen_by: Annotated[str, typer.Option(help="human (the annotator's choice: chosen / sft_index) | reward (PRO's "
                                                "reward-model top pick).")] = "human",
    format: Annotated[str, typer.Option("--format", help="Prompt format: alol (### Human/### Assistant) | hh (\\n\\nHuman:) | messages.")] = "alol",
    reward_transform: Annotated[str, typer.Option(help="sigmoid (A-LoL) | raw (PRO's reward-model logits).")] = "sigmoid",
    clean: Annotated[bool, typer.Option(help="Drop train rows whose responses end with ':' (A-LoL's cleaning).")] = True,
    max_history_turns: HistTurns = None,
) -> None:
    """Anthropic HH-RLHF, as released or as PRO / A-LoL re-package it → preference, response or ranking records.
    Rows with empty or identical last replies are dropped and counted."""
    _wrote(output_dir, _recipe("hh")(input, output_dir, kind=kind, fmt=format, reward_transform=reward_transform,
                                     clean=clean, chosen_by=chosen_by, max_history_turns=max_history_turns))


@preprocess_app.command("reddit")
def preprocess_reddit_cmd(
    output_dir: OutDir,
    input_dir: Annotated[str | None, typer.Argument(help="Folder with comments_positive.csv and comments_negative.csv. "
                                                                 "[default: none: give --positive and --negative]")] = None,
    positive: Annotated[str | None, typer.Option(help="Upvoted comments CSV (default: INPUT_DIR/comments_positive.csv).")] = None,
    negative: Annotated[str | None, typer.Option(help="Downvoted comments CSV (default: INPUT_DIR/comments_negative.csv).")] = None,
    sample_size: Annotated[int, typer.Option(help="Rows sampled per file before filtering (A-LoL: 102000).")] = 102_000,
    test_size: Annotated[int, typer.Option(help="Test rows per file (A-LoL: 1000).")] = 1000,
    val_size: Annotated[int, typer.Option(help="Validation rows per file (A-LoL: 1000).")] = 1000,
    max_words: Annotated[int, typer.Option(help="Drop rows whose parent or comment has more words (A-LoL: 100).")] = 100,
    seed: Annotated[int, typer.Option(help="Sampling seed (A-LoL: 901).")] = 901,
) -> None:
    """Kaggle Reddit upvoted / downvoted comments → test, val, pos_train, neg_train."""
    _wrote(output_dir, _recipe("reddit")(input_dir, output_dir, positive=positive, negative=negative, sample_size=sample_size,
                                         test_size=test_size, val_size=val_size, max_words=max_words, seed=seed))


@preprocess_app.command("wow")
def preprocess_wow_cmd(
    input_dir: Annotated[str, typer.Argument(help="Unpacked wizard_of_wikipedia folder (train.json, valid_topic_split.json, ...).")],
    output_dir: OutDir,
    faithdial_dir: Annotated[str | None, typer.Option(help="FaithDial folder: also write faithdial_test.jsonl (A-LoL). "
                                                                    "[default: none]")] = None,
    max_history_words: HistWords = 300,
    max_history_turns: HistTurns = None,
    sep: Sep = "<|endoftext|>",
) -> None:
    """Wizard of Wikipedia → knowledge + history prompts, wizard responses."""
    _wrote(output_dir, _recipe("wow")(input_dir, output_dir, faithdial_dir=faithdial_dir, max_history_words=max_history_words,
                                      max_history_turns=max_history_turns, sep=sep))


@preprocess_app.command("faithdial")
def preprocess_faithdial_cmd(
    input_dir: Annotated[str, typer.Argument(help="FaithDial folder (train.json, valid.json, test.json).")],
    output_dir: OutDir,
    max_history_words: HistWords = 300,
    max_history_turns: HistTurns = None,
    sep: Sep = "<|endoftext|>",
) -> None:
    """FaithDial → knowledge + history prompts, faithful responses."""
    _wrote(output_dir, _recipe("faithdial")(input_dir, output_dir, max_history_words=max_history_words,
                                            max_history_turns=max_history_turns, sep=sep))


@preprocess_app.command("faithdial_wow")
def preprocess_faithdial_wow_cmd(
    wow_dir: Annotated[str, typer.Option(help="Unpacked wizard_of_wikipedia folder.")],
    faithdial_dir: Annotated[str, typer.Option(help="FaithDial folder.")],
    output_dir: OutDir,
    max_history_words: HistWords = 300,
    max_history_turns: HistTurns = None,
    sep: Sep = "<|endoftext|>",
    seed: Annotated[int, typer.Option(help="Shuffle seed of the merged train split (A-LoL: 901).")] = 901,
) -> None:
    """WoW + FaithDial train and val, FaithDial test (A-LoL's faithdial_wow task)."""
    _wrote(output_dir, _recipe("faithdial_wow")(wow_dir, faithdial_dir, output_dir, max_history_words=max_history_words,
                                                max_history_turns=max_history_turns, sep=sep, seed=seed))


@preprocess_app.command("comet")
def preprocess_comet_cmd(
    output_dir: OutDir,
    atomic10x: Annotated[str | None, typer.Option(help="ATOMIC10X.jsonl (SKD release). [default: none]")] = None,
    atomic2020: Annotated[str | None, typer.Option(help="ATOMIC-2020 test.tsv (head, relation, tail). [default: none]")] = None,
    group_test: Annotated[bool, typer.Option(help="One ATOMIC-2020 record per (head, relation), all tails in meta.references.")] = True,
    min_p_valid: Annotated[float | None, typer.Option(help="Drop ATOMIC-10X triples with a lower critic score. "
                                                                  "[default: keep all]")] = None,
) -> None:
    """ATOMIC-10X / ATOMIC-2020 → COMET prompts ({head} {relation} [GEN]), tails, critic rewards."""
    _wrote(output_dir, _recipe("comet")(atomic10x, output_dir, atomic2020=atomic2020, group_test=group_test,
                                        min_p_valid=min_p_valid))


@preprocess_app.command("tldr")
def preprocess_tldr_cmd(
    output_dir: OutDir,
    comparisons: Annotated[list[str] | None, typer.Option(help="comparisons/ folder or batch*.json file (repeatable). "
                                                                        "[default: none]")] = None,
    sft_dir: Annotated[str | None, typer.Option(help="tldr_3_filtered folder (train/valid/test.jsonl). [default: none]")] = None,
    val_size: Annotated[int | None, typer.Option(help="Keep this many valid1 comparisons as val, the rest to train (PRO: 1000). "
                                                             "[default: all as val]")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the --val-size sample.")] = 42,
) -> None:
    """OpenAI TL;DR: human comparisons → preferences; filtered SFT data → responses."""
    _wrote(output_dir, _recipe("tldr")(output_dir, comparisons=comparisons, sft_dir=sft_dir, val_size=val_size, seed=seed))


@preprocess_app.command("imdb")
def preprocess_imdb_cmd(
    input_dir: Annotated[str, typer.Argument(help="The aclImdb folder (train/{pos,neg}, test/{pos,neg}).")],
    output_dir: OutDir,
    val_fraction: Annotated[float, typer.Option(help="Share of train reviews held out as val (RL4LMs: 0.2).")] = 0.2,
    test_size: Annotated[int, typer.Option(help="Test reviews kept after a seeded shuffle (RL4LMs: 5000).")] = 5000,
    prompt_fraction: Annotated[float, typer.Option(help="Share of a review's words in the prompt (RL4LMs: 0.5).")] = 0.5,
    sentiment: Annotated[str, typer.Option(help="all | pos | neg reviews.")] = "all",
    strip_html: Annotated[bool, typer.Option(help="Replace <br /> tags by spaces.")] = False,
    seed: Annotated[int, typer.Option(help="Shuffle seed.")] = 0,
) -> None:
    """IMDB reviews → review-prefix prompts and their continuations."""
    _wrote(output_dir, _recipe("imdb")(input_dir, output_dir, val_fraction=val_fraction, test_size=test_size,
                                       prompt_fraction=prompt_fraction, sentiment=sentiment, strip_html=strip_html, seed=seed))


@preprocess_app.command("ultrafeedback")
def preprocess_ultrafeedback_cmd(
    inputs: Annotated[list[str], typer.Argument(help="JSONL files, e.g. train_prefs.jsonl test_prefs.jsonl.")],
    output_dir: OutDir,
    plain: Annotated[bool, typer.Option(help="Prompt as the plain 'prompt' string instead of messages.")] = False,
    keep_ties: Annotated[bool, typer.Option(help="Keep pairs with equal scores.")] = False,
) -> None:
    """UltraFeedback binarized → preference records with scores."""
    _wrote(output_dir, _recipe("ultrafeedback")(inputs, output_dir, plain=plain, keep_ties=keep_ties))


_REWARD_PRESETS = ", ".join(sorted(p.stem for p in (Path(__file__).parent / "rewards" / "presets").glob("*.yaml")))


@app.command(help=(
    "Score every response of a records file: writes 'reward' (the weighted sum) and 'rewards' "
    "(each component, unweighted).\n\nResumable: progress is saved after every batch, a re-run after an "
    "interruption scores only the missing rows, and the output appears only when complete.\n\nA reward is a "
    f"built-in task (colours), a preset ({_REWARD_PRESETS}) or a YAML reward config (docs/rewards.md); "
    "--set components.NAME.KEY=VALUE overrides any setting, e.g. a model path."))
def reward(
    input: Annotated[str, typer.Option(help="Records to score: " + DATA_FORMATS)],
    output: Annotated[str, typer.Option(help="Scored records, written when complete: " + OUTPUT_FORMATS)],
    reward: Annotated[str | None, typer.Option("--reward", "-r", help=f"Built-in task (colours, numbers, dates), preset ({_REWARD_PRESETS}), "
                                                                                "YAML path, module:function or file.py:function. "
                                                                                "[default: colours]")] = None,
    config: Annotated[str | None, typer.Option("--config", "-c", help="YAML reward config (same as --reward PATH). "
                                                                                   "[default: none]")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Responses per scoring step (default: the config's, 64).")] = None,
    sets: Sets = None,
    quiet: Quiet = False,
) -> None:
    from .config import parse_overrides
    from .scoring import score_file

    check_records_output(output)

    if reward and config:
        raise LolkitError("give --reward or --config, not both")
    info = score_file(config or reward or "colours", input, output, batch_size=batch_size, quiet=quiet,
                      overrides=parse_overrides(sets or []))
    resumed = f" ({info['resumed_responses']} resumed)" if info["resumed_responses"] else ""
    _console().print(f"wrote {output}: {info['responses']} responses scored{resumed}, mean reward {info['reward_mean']:.4f}")


@app.command()
def generate(
    model: Annotated[str, typer.Option(help="Model directory, run directory (its final/) or short name (tiny, smollm2).")],
    data: Annotated[str, typer.Option(help="Prompts (rows with a 'prompt'; any record kind works): " + DATA_FORMATS)],
    output: Annotated[str, typer.Option(help="Response records, written when complete: " + OUTPUT_FORMATS)],
    num_samples: Annotated[int, typer.Option(help="Responses per prompt.")] = 4,
    sample: Annotated[bool, typer.Option("--sample/--greedy", help="Sample (default) or decode greedily.")] = True,
    max_new_tokens: Annotated[int, typer.Option(help="Maximum response length in tokens.")] = 64,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 1.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling threshold.")] = 1.0,
    batch_size: Annotated[int, typer.Option(help="Prompts per generation batch.")] = 16,
    max_prompt_len: Annotated[int | None, typer.Option(help="Prompt tokens kept (from the end) (default: the whole prompt, up to the context minus --max-new-tokens).")] = None,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    trust_remote_code: Annotated[bool, typer.Option(help="Allow the model's own code to run.")] = False,
    allow_pickle: Annotated[bool, typer.Option(help="Load pickle weights (pytorch_model.bin) when the model has no safetensors.")] = False,
    quiet: Quiet = False,
) -> None:
    """Sample responses from a model for every prompt: builds an offline dataset to score and train on."""
    from .generation import GenerationConfig, generate_file

    check_records_output(output)

    if num_samples < 1 or (not sample and num_samples > 1):
        raise LolkitError("--num-samples must be >= 1, and 1 with --greedy")
    cfg = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=sample, temperature=temperature, top_p=top_p,
                           num_samples=num_samples, batch_size=batch_size, max_prompt_len=max_prompt_len, seed=seed)
    info = generate_file(model, data, output, cfg, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle,
                         quiet=quiet)
    _console().print(f"wrote {output}: {info['responses']} responses for {info['prompts']} prompts"
                     + (f" ({info['empty']} empty ones dropped)" if info["empty"] else ""))


@app.command()
def aggregate(
    dirs: Annotated[list[str], typer.Argument(help="Directories to search for eval summary.json files.")],
    output_dir: Annotated[str, typer.Option(help="Where to write results.md/.csv/.tex and the figures.")],
    metric: Annotated[str, typer.Option(help="Main metric: first column, Δ column and bar chart (a summary.json key, "
                                             "e.g. reward_mean, rougeL, qd).")] = "reward_mean",
    baseline: Annotated[str | None, typer.Option(help="Algorithm every other is compared with. [default: each test "
                                                      "set's first]")] = None,
    columns: Annotated[str | None, typer.Option(help="Metrics of the paper table, comma-separated. [default: the main "
                                                     "metric, length, distinct-2, self-BLEU, PPL, ROUGE-L]")] = None,
) -> None:
    """Paper tables (LaTeX, Markdown, CSV) and figures (PNG, PDF, SVG) from many evaluated runs, grouped by test data,
    algorithm and model: mean over seeds with 95% intervals over prompts and seeds, paired differences to a
    baseline with Holm-corrected permutation tests, best/worst validation checkpoints (docs/evaluation.md)."""
    from .aggregate import aggregate as run

    check_output(output_dir, is_dir=True, what="--output-dir")

    cols = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
    rows = run(dirs, output_dir, metric, baseline=baseline, columns=cols, warn=_warn)
    _results_table(rows, metric)
    _console().print(f"wrote {output_dir}/: {_written(output_dir)}", soft_wrap=True)


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _written(output_dir: str) -> str:
    """The aggregate outputs in ``output_dir``: results.md/.csv/.tex, then each figure's formats."""
    out = Path(output_dir)
    tables = [p.name for p in (out / "results.md", out / "results.csv", out / "results.tex") if p.is_file()]
    stems = sorted({p.stem for p in out.glob("*.pdf")}, key=lambda s: (s in ("curves", "validation"), s))
    return ", ".join(tables + [f"{s}.{{png,pdf,svg}}" for s in stems])


@app.command()
def compare(
    run_a: Annotated[str, typer.Argument(help="Eval directory (or generations.jsonl) of run A.")],
    run_b: Annotated[str, typer.Argument(help="Eval directory (or generations.jsonl) of run B.")],
    judge: Annotated[str, typer.Option(help="reward:SPEC (task, preset or reward YAML) or llm:MODEL (a local instruction model, e.g. smollm2).")],
    output_dir: Annotated[str, typer.Option(help="Where to write comparison.json and pairs.jsonl.")],
    tie_margin: Annotated[float, typer.Option(help="Reward judge: |r_A - r_B| <= this is a tie.")] = 0.0,
    max_pairs: Annotated[int | None, typer.Option(help="Judge only the first N pairs. [default: all]")] = None,
    batch_size: Annotated[int, typer.Option(help="LLM judge: sequences per forward pass.")] = 8,
) -> None:
    """Pairwise comparison of two runs' generations (paired by prompt id and sample): win/tie/loss rates of A
    against B with 95% Wilson intervals. An LLM judge compares log p("A") with log p("B") in both orders."""
    from .compare import compare as run

    check_output(output_dir, is_dir=True, what="--output-dir")

    res = run(run_a, run_b, judge, output_dir, max_pairs=max_pairs, tie_margin=tie_margin, batch_size=batch_size)
    con = _console()
    for name, plural in (("win", "wins"), ("tie", "ties"), ("loss", "losses")):
        lo, hi = res[f"{name}_rate_ci95"]
        con.print(f"{name:>4}: {res[plural]:>5} / {res['pairs']}  {res[name + '_rate']:.3f}  [{lo:.3f}, {hi:.3f}]")
    con.print(f"wrote {output_dir}/comparison.json and pairs.jsonl (judge {res['judge']})")


def _results_table(rows: list[dict], metric: str = "reward_mean") -> None:
    """The main metric (mean ± half-width of its 95 % interval), its paired difference to the baseline with
    the Holm-corrected marker, and distinct-2, per group."""
    from rich.table import Table

    from .aggregate import cell_text, delta_text
    from .figures import LABELS

    name = LABELS.get(metric, metric)
    t = Table(title="results (± : half-width of the 95% interval; * Holm-corrected p < 0.05)")
    for c in ("algo", "test data", "seeds", name, f"Δ {name}", "distinct-2"):
        t.add_column(c, justify="left" if c in ("algo", "test data") else "right")
    for r in rows:
        t.add_row(r["label"], Path(r["data"]).name, str(r["seeds"]), cell_text(r, metric, False, False).replace("\\", ""),
                  delta_text(r, metric, False).replace("\\", ""), cell_text(r, "distinct_2", False, False))
    con = _console()
    if not con.is_terminal:  # a log file: no reason to fold the numbers at 80 columns
        from rich.console import Console

        con = Console(width=160)
    con.print(t)


@app.command()
def demo(
    output_dir: Annotated[str, typer.Option(help="Where the data, runs and results go.")] = "demo-output",
    algos: Annotated[str | None, typer.Option(help="Comma-separated algorithms (default: the demo's set).")] = None,
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds.")] = "0",
    model: Annotated[str, typer.Option(help="Model (default: the tiny random model).")] = "tiny",
    max_steps: Annotated[int | None, typer.Option(help="Optimizer steps per run; fewer for a quick look. [default: 400]")] = None,
    quiet: Quiet = False,
) -> None:
    """Run preprocess → train → eval → aggregate on the built-in task and print the results table."""
    import time

    from .demo import DEMO_ALGOS, run_demo

    t0 = time.perf_counter()
    try:
        seed_list = tuple(int(s) for s in seeds.split(",") if s.strip())
    except ValueError:
        raise LolkitError(f"--seeds {seeds!r}: expected comma-separated integers") from None
    algo_list = tuple(a.strip() for a in algos.split(",")) if algos else DEMO_ALGOS
    con = _console()
    rows = run_demo(output_dir, algo_list, seed_list, model, quiet, log=lambda m: con.print(f"[dim]{m}[/dim]"),
                    max_steps=max_steps, warn=_warn)
    _results_table(rows)
    con.print(f"wrote {output_dir}/: {_written(output_dir)} ({time.perf_counter() - t0:.0f} s)", soft_wrap=True)


@app.command("tiny-model")
def tiny_model(
    output_dir: Annotated[str, typer.Argument(help="Directory for the model and tokenizer.")],
    hidden_size: Annotated[int, typer.Option(help="Hidden size.")] = 64,
    layers: Annotated[int, typer.Option(help="Transformer layers.")] = 2,
    heads: Annotated[int, typer.Option(help="Attention heads.")] = 4,
    vocab_size: Annotated[int, typer.Option(help="BPE vocabulary size.")] = 512,
    seed: Annotated[int, typer.Option(help="Initialisation seed.")] = 0,
    arch: Annotated[str, typer.Option(help="llama (no dropout), gpt2 (dropout on embeddings, residuals and "
                                           "attention) or t5 (an encoder–decoder).")] = "llama",
    dropout: Annotated[float, typer.Option(help="gpt2: the dropout rate of its three dropout sites; t5: its "
                                                "dropout rate.")] = 0.1,
    context: Annotated[int, typer.Option(help="Context window (positions) in tokens (llama, gpt2).")] = 1024,
) -> None:
    """Create a tiny random model (a Llama or GPT-2 causal LM, or a T5 encoder–decoder) and a byte-level BPE
    tokenizer, offline."""
    from .tiny import create_tiny_model

    path = create_tiny_model(output_dir, hidden_size=hidden_size, layers=layers, heads=heads,
                             vocab_size=vocab_size, seed=seed, arch=arch, dropout=dropout, context=context)
    _console().print(f"wrote {path}")


# --- latent-action control (src/lolkit/cola; docs/cola.md) -----------------------------------------------
ColaRun = Annotated[str, typer.Option("--run", "--cola-run", help=(
    "CoLA run directory (made by `lolkit cola world`); under torchrun write --cola-run (torchrun takes --run for "
    "an abbreviation of its own --run-path)."))]
Overwrite = Annotated[bool, typer.Option(help="Replace this stage's existing output (and the stages built on it).")]
Resume = Annotated[bool, typer.Option(help="Continue this stage from its last checkpoint.")]
SaveEvery = Annotated[int, typer.Option(help="Checkpoint every N steps (0: at the end only).")]
EvalEvery = Annotated[int, typer.Option(help="Validate every N steps, keeping the best in checkpoints/best (0: at the end only).")]
ReportTo = Annotated[str | None, typer.Option(help="Experiment trackers, comma-separated: tensorboard, wandb, mlflow, "
                                                   "trackio. [default: none]")]


def _lr_help(stage: str) -> str:
    return f"AdamW learning rate. [default: {DEFAULT_LR[stage][0]:g}]"


def _trackers(report_to: str | None) -> list[str]:
    return [t.strip() for t in (report_to or "").split(",") if t.strip()]


@cola_app.command("world")
def cola_world(
    output_dir: Annotated[str, typer.Option(help="CoLA run directory.")],
    model: Annotated[str, typer.Option(help="Frozen base model: directory, short name (tiny, smollm2) or hub id.")] = "tiny",
    data: Annotated[str, typer.Option(help="Corpus: builtin:TASK (its training records), records JSONL, {\"text\"} JSONL or .txt.")] = "builtin:colours",
    val_data: Annotated[str | None, typer.Option(help="Validation corpus (any --data form). [default: the corpus]")] = None,
    steps: Annotated[int, typer.Option(help="Optimizer steps.")] = 300,
    batch_size: Annotated[int, typer.Option(help="Sequences per step.")] = 16,
    lr: Annotated[float | None, typer.Option(help=_lr_help("cola_world"))] = None,
    entropy_weight: Annotated[float, typer.Option(help="λ of the code-book usage entropy term.")] = 0.1,
    tau: Annotated[float, typer.Option(help="Gumbel-softmax temperature.")] = 1.0,
    num_actions: Annotated[int, typer.Option(help="K, the number of latent actions.")] = 64,
    width: Annotated[int, typer.Option(help="Width of the IDM's and the policy's causal blocks.")] = 128,
    layers: Annotated[int, typer.Option(help="Causal blocks of the IDM and of the policy.")] = 2,
    max_len: Annotated[int, typer.Option(help="Tokens kept per corpus sequence.")] = 64,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    save_every: SaveEvery = 50,
    eval_every: EvalEvery = 0,
    report_to: ReportTo = None,
    resume: Resume = False,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
) -> None:
    """Stage 0: cache the frozen base's hidden states of the corpus, train the inverse-dynamics model and the
    world model (next-token NLL through the frozen LM head + the code-book entropy term)."""
    from .cola.train import WorldOptions, train_world

    s = train_world(WorldOptions(output_dir, model, data, val_data, steps, batch_size, entropy_weight, tau, max_len,
                                 {"num_actions": num_actions, "width": width, "idm_layers": layers,
                                  "policy_layers": layers},
                                 seed=seed, lr=lr, save_every=save_every, eval_every=eval_every,
                                 report_to=_trackers(report_to), resume=resume, overwrite=overwrite),
                    quiet=quiet, log=lambda m: _console().print(f"[dim]{m}[/dim]"))
    _console().print(f"[green]done[/green]: {output_dir}/world (world-model NLL {s['world_nll_initial']:.4f} → "
                     f"{s['world_nll_final']:.4f}, code-book perplexity {s['codebook_perplexity']:.2f} of "
                     f"{s['num_actions']}, {s['actions_used']} actions used, {s['train_seconds']:.0f} s)")


@cola_app.command("bc")
def cola_bc(
    run: ColaRun,
    val_data: Annotated[str | None, typer.Option(help="Validation corpus. [default: the run's corpus]")] = None,
    steps: Annotated[int, typer.Option(help="Optimizer steps.")] = 300,
    batch_size: Annotated[int, typer.Option(help="Sequences per step.")] = 16,
    lr: Annotated[float | None, typer.Option(help=_lr_help("cola_bc"))] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    save_every: SaveEvery = 50,
    eval_every: EvalEvery = 0,
    report_to: ReportTo = None,
    resume: Resume = False,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
) -> None:
    """Stage 1: behaviour-clone the latent policy on the IDM's actions over the run's corpus."""
    from .cola.train import BCOptions, train_bc

    s = train_bc(BCOptions(run, val_data, steps, batch_size, seed=seed, lr=lr, save_every=save_every,
                           eval_every=eval_every, report_to=_trackers(report_to), resume=resume, overwrite=overwrite),
                 quiet=quiet, log=lambda m: _console().print(f"[dim]{m}[/dim]"))
    _console().print(f"[green]done[/green]: {run}/policy_bc (cross-entropy {s['bc_loss_initial']:.4f} → "
                     f"{s['bc_loss_final']:.4f}, accuracy {s['bc_accuracy']:.3f}, {s['train_seconds']:.0f} s)")


@cola_app.command("rl")
def cola_rl(
    run: ColaRun,
    reward: Annotated[str | None, typer.Option(help="Any lolkit reward (default: the corpus's built-in task).")] = None,
    data: Annotated[str | None, typer.Option(help="Prompts (JSONL). [default: the built-in task's train split]")] = None,
    steps: Annotated[int, typer.Option(help="Iterations (rollout + update).")] = 30,
    prompts_per_step: Annotated[int, typer.Option(help="N prompts per rollout.")] = 8,
    samples_per_prompt: Annotated[int, typer.Option(help="M samples per prompt (the baseline's group).")] = 4,
    epochs: Annotated[int, typer.Option(help="Passes over each rollout.")] = 2,
    minibatch_size: Annotated[int, typer.Option(help="Samples per update.")] = 16,
    lr: Annotated[float | None, typer.Option(help=_lr_help("cola_rl"))] = None,
    clip: Annotated[float, typer.Option(help="PPO ratio clip ε.")] = 0.2,
    kl_beta: Annotated[float, typer.Option(help="β of the KL penalty to the behaviour-cloned policy.")] = 0.05,
    kl_target: Annotated[float | None, typer.Option(help="Adapt β towards this KL (default: fixed β).")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Maximum response length.")] = 16,
    eval_prompts: Annotated[int, typer.Option(help="Prompts of the reward measurement (validation).")] = 32,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    save_every: SaveEvery = 50,
    eval_every: EvalEvery = 0,
    report_to: ReportTo = None,
    resume: Resume = False,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
) -> None:
    """Latent-action RL: PPO with a group baseline and a KL penalty to the BC policy; only the policy learns."""
    from .cola.rl import RLOptions, train_rl

    s = train_rl(RLOptions(run, reward, data, None, steps, prompts_per_step, samples_per_prompt, epochs, minibatch_size,
                           clip, kl_beta, kl_target, max_new_tokens, 1.0, eval_prompts, 2, seed=seed, lr=lr,
                           save_every=save_every, eval_every=eval_every, report_to=_trackers(report_to), resume=resume,
                           overwrite=overwrite),
                 quiet=quiet)
    _console().print(f"[green]done[/green]: {run}/policy_rl (reward {s['reward_before']:.4f} → {s['reward_after']:.4f} "
                     f"on {s['eval_prompts']} prompts, KL to BC {s['final_kl']:.4f}, {s['train_seconds']:.0f} s)")


@cola_app.command("generate")
def cola_generate(
    run: ColaRun,
    output: Annotated[str, typer.Option(help="Response records (JSONL) with meta.actions.")],
    data: Annotated[str | None, typer.Option(help="Prompts (JSONL). [default: the built-in task's test split]")] = None,
    policy: Annotated[str | None, typer.Option(help="bc | rl (default: rl when trained, else bc).")] = None,
    num_samples: Annotated[int, typer.Option(help="Responses per prompt.")] = 4,
    max_new_tokens: Annotated[int, typer.Option(help="Maximum response length.")] = 32,
    action_temperature: Annotated[float, typer.Option(help="Temperature of the action sampling (0: argmax).")] = 1.0,
    token_temperature: Annotated[float, typer.Option(help="Temperature of the token given the action (0: greedy).")] = 0.0,
    return_actions: Annotated[bool, typer.Option(help="Write the action sequence to meta.actions.")] = True,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
) -> None:
    """Sample an action from the policy, decode the token from the world model, repeat."""
    from .cola.generate import generate_file as run_generate

    check_output(output)

    info = run_generate(run, data, output, policy=policy, num_samples=num_samples, max_new_tokens=max_new_tokens,
                        action_temperature=action_temperature, token_temperature=token_temperature, seed=seed,
                        return_actions=return_actions)
    _console().print(f"wrote {output}: {info['responses']} responses for {info['prompts']} prompts ({info['policy']} policy)")


def _usage_line(e) -> str:
    """One line for a usage error typer raises (unknown option or command, bad value, missing option):
    the message, the command it concerns and where to read its options."""
    ctx = getattr(e, "ctx", None)
    msg = " ".join(e.format_message().split())
    if ctx is not None:
        path = ctx.command_path
    else:  # some parser errors carry no context: the command is the words before the first option
        words = []
        for a in sys.argv[1:]:
            if a.startswith("-"):
                break
            words.append(a)
        path = " ".join(["lolkit", *words[:2]])
    return f"{path}: {msg} (see '{path} --help')"


def main() -> None:
    """Entry point: every user error ends in one line on stderr and exit code 2; Ctrl-C in exit code 130.

    typer bundles its own copy of click, so its exceptions are taken from ``typer._click``, not ``click``;
    with ``standalone_mode=False`` typer turns a KeyboardInterrupt inside a command into a return value."""
    from typer._click import exceptions as click_errors
    from typer.exceptions import Abort

    from .progress import main_process

    try:
        code = app(standalone_mode=False)
    except LolkitError as e:
        if _state["debug"]:
            raise
        msg = " ".join(str(e).split("\n"))
        if main_process():  # every process meets the same error: the main one reports it
            print(f"error: {msg}", file=sys.stderr)
        sys.exit(2)
    except click_errors.NoArgsIsHelpError as e:
        print(e.format_message())  # a group called without a command: its help, exit code 2 as click does
        sys.exit(2)
    except click_errors.UsageError as e:
        print(f"error: {_usage_line(e)}", file=sys.stderr)
        sys.exit(2)
    except click_errors.ClickException as e:
        print(f"error: {' '.join(e.format_message().split())}", file=sys.stderr)
        sys.exit(2)
    except (Abort, KeyboardInterrupt):
        code = 130
    except OSError as e:  # a file the user named cannot be read or written (permissions, full disk, ...)
        if _state["debug"]:
            raise
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}", file=sys.stderr)
        sys.exit(2)
    if code == 130:
        print("interrupted: nothing was left half-written; re-run the command (with --resume for train) to continue",
              file=sys.stderr)
        sys.exit(130)
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
