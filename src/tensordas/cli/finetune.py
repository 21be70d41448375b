"""``tensordas finetune``: the fine-tuning family — a pretrained transformer with a LoRA/FLoRA/TT adapter."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ..tasks import TASKS
from ..tasks.finetune import DEFAULT_MODEL, MODEL_DTYPES, adapter_names
from ._common import _datasets_help, comparison_command

_FINETUNE = TASKS["finetune"]
_C = _FINETUNE.config()


@comparison_command(_FINETUNE, out="runs/finetune")
def finetune_command(
    adapter: Annotated[
        str, typer.Option(help=f"{' | '.join(adapter_names())}: Hugging Face PEFT's LoRA or a tensordas adapter.")
    ] = _C.adapter,
    rank: Annotated[int, typer.Option(help="Adapter rank (LoRA r, FLoRA core size, TT bond rank).")] = _C.rank,
    adapter_alpha: Annotated[
        float | None, typer.Option(help="Adapter scale (LoRA lora_alpha; default: each adapter's own).")
    ] = None,
    target_modules: Annotated[
        str, typer.Option(help="Comma-separated linear layers (names or suffixes), or all-linear.")
    ] = ",".join(_C.target_modules),
    noise: Annotated[
        float, typer.Option(help="Symmetric label-flip probability on the training (and validation) labels, seeded.")
    ] = _C.noise,
    model: Annotated[
        str,
        typer.Option(help=f"{DEFAULT_MODEL} (bundled, offline), a local model folder, or a Hugging Face model name."),
    ] = _C.model,
    dataset: Annotated[
        str,
        typer.Option(
            "--dataset",
            "--data",
            help=_datasets_help("text") + " | a .csv/.tsv/.jsonl/.json file | a Hugging Face dataset (NAME or "
            "NAME:CONFIG, e.g. glue/sst2; needs the 'datasets' package).",
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
    dtype: Annotated[
        str,
        typer.Option(
            help=f"Load the model's weights as {' | '.join(MODEL_DTYPES)} (auto: the checkpoint's own dtype); "
            "the head and adapters follow."
        ),
    ] = _C.dtype,
    max_length: Annotated[int, typer.Option(help="Truncate inputs to this many tokens.")] = _C.max_length,
    epochs: Annotated[int, typer.Option(help="Passes over the training data.")] = _C.epochs,
    batch_size: Annotated[int, typer.Option(help="Examples per optimizer step.")] = _C.batch_size,
) -> dict[str, Any]:
    """Family finetune: fine-tune a pretrained transformer with an adapter and a linear head on a text
    classification task.

    Runs the fine-tuning family (--lr applies to the adapter and the head). Writes OUT/curves.csv (per
    epoch: train loss, test accuracy and F1, Q), OUT/finetune.png, OUT/config.json and, last,
    OUT/results.json (one record per optimizer and seed); prints mean ± std over seeds and the step-time
    ratios to the base optimizer.
    """
    return dict(
        noise=noise,
        data=dataset,
        text_column=text_column,
        label_column=label_column,
        dataset_split=dataset_split,
        test_fraction=test_fraction,
        train_size=train_size,
        test_size=test_size,
        model=model,
        dtype=dtype,
        max_length=max_length,
        adapter=adapter,
        rank=rank,
        adapter_alpha=adapter_alpha,
        target_modules=tuple(t.strip() for t in target_modules.split(",") if t.strip()),
        epochs=epochs,
        batch_size=batch_size,
    )
