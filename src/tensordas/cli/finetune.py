"""``tensordas finetune``: a pretrained transformer with a LoRA/FLoRA/TT adapter under base, SAM and DAS."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..tasks.finetune import DEFAULT_MODEL, FinetuneConfig, finetune_table, run_finetune, write_finetune
from ._common import (
    Alpha,
    AlphaSchedule,
    BaseOpt,
    Compare,
    DasVariant,
    Device,
    GradNorm,
    Methods,
    Momentum,
    Progress,
    Rho,
    Seeds,
    WeightDecay,
    build_config,
    parse_methods,
    parse_seeds,
    run_comparison,
)

_C = FinetuneConfig()


def finetune_command(
    adapter: Annotated[
        str, typer.Option(help="lora (Hugging Face PEFT) | flora (Tucker A·E·B) | tt (tensor train).")
    ] = _C.adapter,
    rank: Annotated[int, typer.Option(help="Adapter rank (LoRA r, FLoRA core size, TT bond rank).")] = _C.rank,
    adapter_alpha: Annotated[
        float | None, typer.Option(help="Adapter scale (LoRA lora_alpha; default: each adapter's own).")
    ] = None,
    target_modules: Annotated[
        str, typer.Option(help="Comma-separated linear layers (names or suffixes), or all-linear.")
    ] = ",".join(_C.target_modules),
    model: Annotated[
        str,
        typer.Option(help=f"{DEFAULT_MODEL} (bundled, offline), a local model folder, or a Hugging Face model name."),
    ] = _C.model,
    dataset: Annotated[
        str,
        typer.Option(
            "--dataset",
            "--data",
            help="vader | vader-noisy | a .csv/.tsv/.jsonl/.json file | a Hugging Face dataset (NAME or NAME:CONFIG, "
            "e.g. glue/sst2; needs the 'datasets' package).",
        ),
    ] = _C.data,
    text_column: Annotated[str, typer.Option(help="Text column of a file or Hugging Face dataset.")] = _C.text_column,
    label_column: Annotated[
        str, typer.Option(help="Label column of a file or Hugging Face dataset.")
    ] = _C.label_column,
    dataset_split: Annotated[str, typer.Option(help="Split of a Hugging Face dataset to load.")] = _C.dataset_split,
    test_fraction: Annotated[
        float, typer.Option(help="Fraction held out for testing (seeded split).")
    ] = _C.test_fraction,
    train_size: Annotated[int | None, typer.Option(help="Subsample the training part to this many examples.")] = None,
    test_size: Annotated[int | None, typer.Option(help="Subsample the test part to this many examples.")] = None,
    max_length: Annotated[int, typer.Option(help="Truncate inputs to this many tokens.")] = _C.max_length,
    base: BaseOpt = _C.base,
    optimizer: Methods = "das",
    compare: Compare = False,
    epochs: Annotated[int, typer.Option(help="Passes over the training data.")] = _C.epochs,
    batch_size: Annotated[int, typer.Option(help="Examples per optimizer step.")] = _C.batch_size,
    lr: Annotated[float, typer.Option(help="Learning rate (adapter and head).")] = _C.lr,
    momentum: Momentum = _C.momentum,
    weight_decay: WeightDecay = _C.weight_decay,
    alpha: Alpha = _C.alpha,
    alpha_schedule: AlphaSchedule = _C.alpha_schedule,
    das_variant: DasVariant = _C.das_variant,
    grad_norm: GradNorm = _C.grad_norm,
    rho: Rho = _C.rho,
    seeds: Seeds = "0",
    device: Device = _C.device,
    threads: Annotated[
        int | None, typer.Option(help="CPU threads for torch (1 is fastest on a busy machine).", min=1)
    ] = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("runs/finetune"),
    resume: Annotated[bool, typer.Option(help="Reuse finished runs found in OUT/runs.")] = True,
    progress: Progress = True,
) -> None:
    """Fine-tune a pretrained transformer with an adapter and a linear head on a text classification task.

    Writes OUT/curves.csv (per epoch: train loss, test accuracy and F1, Q), OUT/finetune.png,
    OUT/config.json and, last, OUT/results.json (one record per optimizer and seed); prints
    mean ± std over seeds and the step-time ratios to the base optimizer.
    """
    config = build_config(
        FinetuneConfig,
        data=dataset,
        text_column=text_column,
        label_column=label_column,
        dataset_split=dataset_split,
        test_fraction=test_fraction,
        train_size=train_size,
        test_size=test_size,
        model=model,
        max_length=max_length,
        adapter=adapter,
        rank=rank,
        adapter_alpha=adapter_alpha,
        target_modules=tuple(t.strip() for t in target_modules.split(",") if t.strip()),
        epochs=epochs,
        batch_size=batch_size,
        base=base,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        optimizers=parse_methods(optimizer, compare),
        alpha=alpha,
        alpha_schedule=alpha_schedule,
        das_variant=das_variant,
        grad_norm=grad_norm,
        rho=rho,
        seeds=parse_seeds(seeds),
        device=device,
    )
    run_comparison(
        config,
        out,
        run=run_finetune,
        write=write_finetune,
        table=finetune_table,
        resume=resume,
        progress=progress,
        threads=threads,
    )
