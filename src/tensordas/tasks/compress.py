"""Model compression: decompose the dense layers of a trained network, then fine-tune it.

1. The dense model comes from a checkpoint (``checkpoint=PATH``) or is trained first
   (``train_dense=True``, the base optimizer, on the chosen data). A checkpoint is a file written by
   :func:`save_dense_model` (``OUT/dense.pt`` of a ``--train-dense`` run), a training checkpoint of
   ``tensordas train`` with a dense model, or a bare state dict together with ``model=NAME``.
2. The chosen layers (default: every ``nn.Linear``/``nn.Conv2d`` except the output layer, i.e. the
   last one) are replaced by tensorized layers fitted to their weights by TensorLy
   (:func:`tensordas.tensorize`: TT-SVD, TR-ALS, CP-ALS or Tucker/HOOI) at a target ``ratio`` (each
   layer gets the largest rank with ``dense weight entries / core entries >= ratio``) or a ``rank``;
   the tensor ``format`` (``tt``, ``tr``, ``cp``, ``tucker``) names the decomposition.
3. Each optimizer (base, SAM, DAS) fine-tunes a copy of the decomposed model on every seed.

Every run shares one data split (``split_seed``; the dense model is trained on it), one dense
model and one decomposition; the seeds vary the fine-tuning's batch order. With ``per_seed_split``
(and ``train_dense``) each seed draws its own split, dense model and decomposition instead (seed
``s`` uses split seed ``s``; the methods of a seed share them), so seeds sample those too.

Label noise (``noise``, ``noise_type``, as in the noisy-label family) corrupts the training labels of
the split (the dense model's and the fine-tuning's, and the validation split's); test labels stay
clean. ``validation`` holds out a share of the training part (stratified, per split) before the dense
model is trained, for tuning a strength list (:mod:`tensordas.tasks.tuning`). Records report the
dense accuracy, the accuracy right after decomposition (``decomposed_test_acc``) and after
fine-tuning (``test_acc`` at the epoch of best validation accuracy, ``final_test_acc`` at the end,
``best_test_acc``), the parameter counts and the achieved
compression ratios: ``layer_ratio`` (dense weight entries / core entries of the decomposed layers,
>= the requested ratio) and ``model_ratio`` (all parameters before / after).
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import ClassificationData, corrupt_labels
from ..formats import RankLike
from ..layers import FORMATS, tensorize, weight_format
from ..layers.from_dense import dense_layout, rank_for_ratio
from ..layers.tensorize import TensorizeReport
from ..networks import build_network, parse_network_name
from ..reporting import ProgressFn, atomic_open, ensure_dir
from ..training import (
    CHECKPOINT_FORMAT,
    LoopConfig,
    OptimizerConfig,
    evaluate,
    load_checkpoint,
    train_classifier,
)
from .config import ClassifierConfig, check_seeds
from .display import curve_figure, summary_table
from .grid import run_comparison
from .noisy import CHECKPOINTS_DIR, hold_out, load_split, network_kwargs
from .protocol import TRAIN_LOSS, Metric, Q, Task
from .runstore import RUN_CHECKPOINT_EVERY_S, RunResult, data_digest, file_digest, fingerprint, run_key
from .tuning import checkpoint_fields, validation_fields

__all__ = [
    "TASK",
    "CURVE_COLUMNS",
    "CompressConfig",
    "CompressExperiment",
    "compress_table",
    "load_dense_model",
    "plot_compress",
    "run_compress",
    "save_dense_model",
    "check_target",
    "select_layers",
    "write_compress",
]

NAME = "compress"
TITLE = "compression of a trained dense network, then fine-tuning"
DENSE_FORMAT = "tensordas-dense-model"
DENSE_FILE = "dense.pt"
DENSE_TRAIN_CHECKPOINT = "dense-train.pt"
# The default metric, at the epoch of best validation accuracy: tuning selects by val_acc at that epoch.
TEST_ACC = Metric("test_acc", "fine-tuned test accuracy at the best-validation epoch")
CURVE_COLUMNS = ["epoch", "step", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "Q", "Q_sum", "time_s"]


@dataclass(frozen=True)
class CompressConfig(ClassifierConfig):
    """Settings of a compression experiment (validated on construction)."""

    split_seed: int = 0
    per_seed_split: bool = False  # seed s draws split s, its own dense model and decomposition (train_dense only)
    checkpoint: str | None = None
    train_dense: bool = False
    model: str | None = None  # dense architecture (default with train_dense: "mlp"); checked against a checkpoint
    hidden: tuple[int, ...] | None = None  # MLP hidden sizes when training the dense model
    dense_epochs: int = 20
    dense_lr: float = 0.05
    format: str = "tt"  # the tensor format of the decomposition
    ratio: float | None = None
    rank: RankLike | None = None
    layers: tuple[str, ...] | None = None  # module-name patterns (fnmatch); None: all but the output layer
    exclude: tuple[str, ...] = ()
    epochs: int = 10

    def check_settings(self) -> None:
        super().check_settings()
        if self.checkpoint is not None and (self.per_seed_split or self.validation_fraction > 0):
            what = "per_seed_split" if self.per_seed_split else "a validation split"
            raise ValueError(f"{what} needs train_dense: a checkpoint's dense model was trained on one fixed split")
        if (self.checkpoint is None) == (not self.train_dense):
            raise ValueError("give exactly one source of the dense model: a checkpoint or train_dense (--train-dense)")
        if (self.ratio is None) == (self.rank is None):
            raise ValueError(f"give exactly one of ratio and rank, got ratio={self.ratio!r}, rank={self.rank!r}")
        if self.format not in FORMATS:
            raise ValueError(f"Invalid tensor format {self.format!r} (expected one of {', '.join(FORMATS)})")
        if self.ratio is not None and not (self.ratio > 0 and self.ratio < float("inf")):
            raise ValueError(f"Invalid compression ratio: {self.ratio} (expected a positive finite number)")
        if self.model is not None:
            fmt, base = parse_network_name(self.model)
            if fmt is not None:
                raise ValueError(f"model {self.model!r} is already tensorized; compress takes a dense one ('{base}')")
        if self.hidden is not None and (not self.hidden or min(self.hidden) < 1):
            raise ValueError(f"Invalid hidden sizes {self.hidden!r} (expected positive sizes)")
        if not self.dense_lr >= 0:
            raise ValueError(f"Invalid dense_lr value: {self.dense_lr} (expected >= 0)")
        try:
            check_seeds((self.split_seed,))
        except ValueError as e:
            raise ValueError(f"split_seed: {e}") from None
        _ = self.dense_loop  # validates dense_epochs

    @property
    def architecture(self) -> str:
        return self.model or "mlp"

    def split_of(self, seed: int) -> int:
        """The split seed of run seed ``seed``: ``seed`` itself with ``per_seed_split``, else ``split_seed``."""
        return seed if self.per_seed_split else self.split_seed

    @cached_property
    def dense_loop(self) -> LoopConfig:
        return LoopConfig(epochs=self.dense_epochs, batch_size=self.batch_size, lr_schedule=self.lr_schedule)

    @cached_property
    def dense_optimizer(self) -> OptimizerConfig:
        return OptimizerConfig(
            method="base", base=self.base, lr=self.dense_lr, momentum=self.momentum, weight_decay=self.weight_decay
        )

    def data_settings(self, split: int | None = None) -> dict[str, Any]:
        """What determines the data split (seed ``split``, default ``split_seed``), including digests of a
        data file's contents or a data folder."""
        keys = ("data", "data_dir", "test_fraction", "train_size", "test_size", "split_seed")
        out = {
            **{k: getattr(self, k) for k in keys},
            "data_digest": data_digest(self.data),
            "data_dir_digest": data_digest(self.data_dir),
        }
        if split is not None:
            out["split_seed"] = split
        if self.noise > 0 or self.validation_fraction > 0:  # absent otherwise: untouched splits keep their digests
            out.update(noise=self.noise, noise_type=self.noise_type, validation=self.validation_fraction)
        return out

    def dense_settings(self, split: int | None = None) -> dict[str, Any]:
        """What determines a dense model trained by ``train_dense`` (on split ``split``)."""
        return {
            **self.data_settings(split),
            "architecture": self.architecture,
            "hidden": self.hidden,
            "loop": asdict(self.dense_loop),
            "optimizer": self.dense_optimizer.as_dict(),
        }

    def settings(self) -> dict[str, Any]:
        """What determines a fine-tuning run besides its optimizer, seed and the dense model's identity.

        Includes the device (timings depend on it) and the data digests of :meth:`data_settings`.
        """
        return {**self.run_settings("download"), **self.data_settings()}


# --- dense models on disk -------------------------------------------------------------------------------


def save_dense_model(
    path: str | Path,
    model: nn.Module,
    architecture: str,
    input_shape: Sequence[int],
    num_classes: int,
    model_kwargs: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model``'s state dict with what rebuilds it (architecture name, input shape, classes), atomically."""
    path = Path(path)
    ensure_dir(path.parent)
    state = {
        "format": DENSE_FORMAT,
        "architecture": architecture,
        "input_shape": [int(s) for s in input_shape],
        "num_classes": int(num_classes),
        "model_kwargs": {k: list(v) if isinstance(v, tuple) else v for k, v in (model_kwargs or {}).items()},
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **dict(extra or {}),
    }
    with atomic_open(path, "wb") as f:
        torch.save(state, f)
    return path


def _state_dict_problems(model: nn.Module, state_dict: Mapping[str, Any]) -> str | None:
    """A short description of how ``state_dict`` fails to fit ``model`` (None if it fits)."""
    want = model.state_dict()
    missing = [k for k in want if k not in state_dict]
    unexpected = [k for k in state_dict if k not in want]
    shapes = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(want[k].shape)}"
        for k in want
        if k in state_dict and isinstance(state_dict[k], torch.Tensor) and state_dict[k].shape != want[k].shape
    ]
    parts = []
    for what, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
        if items:
            more = f" and {len(items) - 3} more" if len(items) > 3 else ""
            parts.append(f"{what}: {', '.join(items[:3])}{more}")
    return "; ".join(parts) or None


def load_dense_model(
    path: str | Path,
    input_shape: Sequence[int],
    num_classes: int,
    architecture: str | None = None,
) -> tuple[nn.Module, str]:
    """Rebuild the dense model stored at ``path`` for data of ``input_shape`` with ``num_classes``.

    Returns ``(model, architecture)``. Raises ``FileNotFoundError`` for a missing file and
    ``ValueError`` (one line) for a corrupted file, a bare state dict without ``architecture``, an
    architecture other than ``architecture``, a tensorized architecture, inputs or classes that differ
    from the data's, or weights that do not fit the architecture.
    """
    state = load_checkpoint(path)
    where = f"checkpoint {str(path)!r}"
    kwargs: dict[str, Any] = {}
    shape = classes = None
    if state.get("format") == DENSE_FORMAT:
        weights, stored = state.get("state_dict"), state.get("architecture")
        kwargs = dict(state.get("model_kwargs") or {})
        shape, classes = state.get("input_shape"), state.get("num_classes")
    elif state.get("format") == CHECKPOINT_FORMAT:  # a tensordas train checkpoint
        meta = state.get("meta") or {}
        weights, stored = state.get("model"), meta.get("architecture")
        kwargs = dict(meta.get("model_kwargs") or {})
        shape, classes = meta.get("input_shape"), meta.get("num_classes")
    elif state and all(isinstance(v, torch.Tensor) for v in state.values()):  # a bare state dict
        weights, stored = state, None
    else:
        raise ValueError(f"{where} is not a model checkpoint (no state dict found)")
    if not isinstance(weights, Mapping) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise ValueError(f"{where} is corrupted: its state dict does not hold tensors")
    if stored is None and architecture is None:
        raise ValueError(f"{where} holds no architecture name; pass the dense model's name with --model")
    if stored is not None and architecture is not None and stored.lower() != architecture.lower():
        raise ValueError(f"architecture mismatch: {where} holds a {stored!r} model, but {architecture!r} was asked for")
    arch = stored or architecture
    fmt, base = parse_network_name(arch)
    if fmt is not None:
        raise ValueError(f"{where} holds a tensorized {arch!r} model; compress takes a dense one (e.g. {base!r})")
    if shape is not None and (tuple(shape) != tuple(input_shape) or int(classes) != int(num_classes)):
        raise ValueError(
            f"{where} holds a model for inputs {tuple(shape)} with {classes} classes, "
            f"but the data has inputs {tuple(input_shape)} with {num_classes} classes"
        )
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    model = build_network(arch, tuple(input_shape), num_classes, **kwargs)
    problems = _state_dict_problems(model, weights)
    if problems:
        raise ValueError(f"{where} does not match architecture {arch!r}: {problems}")
    model.load_state_dict(weights)
    return model, arch


SPLIT_KEYS = ("test_fraction", "train_size", "test_size", "split_seed")  # what decides which samples are test samples


def split_facts(data_settings: Mapping[str, Any]) -> dict[str, Any]:
    """The facts of a data split that a checkpoint keeps, so that a later compression can check them."""
    return {k: data_settings.get(k) for k in ("data", "data_digest", *SPLIT_KEYS)}


def check_checkpoint_split(path: str | Path, config: CompressConfig) -> None:
    """``ValueError`` when the checkpoint's model was trained on another split of the same data.

    Its training samples would then lie in this experiment's test set, and ``dense_test_acc`` (and every
    accuracy after it) would be measured partly on data the model was trained on. Checkpoints that do
    not record their split (bare state dicts, older files) are not checked.
    """
    state = load_checkpoint(path)
    stored = state.get("data_split")
    if stored is None and state.get("format") == CHECKPOINT_FORMAT:
        stored = (state.get("meta") or {}).get("data_split")
    if not isinstance(stored, Mapping):
        return
    ours = split_facts(config.data_settings())
    same_data = (
        stored.get("data_digest") == ours["data_digest"]
        if stored.get("data_digest") is not None and ours["data_digest"] is not None
        else stored.get("data") == ours["data"]
    )
    if not same_data:
        return  # other data: no shared samples to leak
    diff = {k: (stored.get(k), ours[k]) for k in SPLIT_KEYS if stored.get(k) != ours[k]}
    if diff:
        what = ", ".join(f"{k}={a!r} (here {b!r})" for k, (a, b) in diff.items())
        raise ValueError(
            f"checkpoint {str(path)!r} was trained on another split of {ours['data']!r}: {what}; its training "
            "samples would be in this test set. Use the same split (e.g. --split-seed)"
        )


# --- layer choice and the rank check ---------------------------------------------------------------------


def select_layers(model: nn.Module, layers: Sequence[str] | None = None, exclude: Sequence[str] = ()) -> list[str]:
    """Names of the ``nn.Linear``/``nn.Conv2d`` modules to decompose.

    ``layers``: module-name patterns (``fnmatch``, e.g. ``features.*``); None: every such layer but the
    last one (the output layer). ``exclude``: patterns removed from the choice.
    """
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d)) and n]
    if not names:
        raise ValueError(f"{type(model).__name__} has no nn.Linear/nn.Conv2d layer to decompose")
    if layers is None:
        chosen = names[:-1]
    else:
        for pattern in layers:
            if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
                raise ValueError(f"no layer matches {pattern!r} (layers: {', '.join(names)})")
        chosen = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in layers)]
    chosen = [n for n in chosen if not any(fnmatch.fnmatchcase(n, p) for p in exclude)]
    if not chosen:
        raise ValueError(f"no layer left to decompose (layers: {', '.join(names)})")
    return chosen


def check_target(
    model: nn.Module, names: Sequence[str], format: str, *, rank: RankLike | None, ratio: float | None
) -> None:
    """``ValueError`` naming the layer for a ratio it cannot reach, or a rank invalid for it or not compressing it."""
    fmt = weight_format(format)
    for name in names:
        layout = dense_layout(model.get_submodule(name), None, fmt.name)
        if ratio is not None:
            try:
                rank_for_ratio(fmt.name, layout, ratio)
            except ValueError as e:
                raise ValueError(f"layer {name!r}: {e}") from None
            continue
        try:
            full = fmt.resolve_rank(layout, rank)
        except ValueError as e:
            raise ValueError(f"rank {rank!r} does not fit layer {name!r}: {e}") from None
        cores = fmt.num_params(layout, full)
        if cores > layout.dense_numel:
            try:
                hint = f"; the largest int rank that compresses it is {rank_for_ratio(fmt.name, layout, 1.0)}"
            except ValueError:
                hint = ""
            raise ValueError(
                f"rank {rank!r} does not fit layer {name!r}: its {fmt.name} cores would hold {cores} parameters, "
                f"more than the {layout.dense_numel} of the dense weight{hint}"
            )


# --- the experiment ---------------------------------------------------------------------------------------


@dataclass
class CompressionSetup:
    """The dense model, its decomposition and their accuracies, shared by every fine-tuning run."""

    data: ClassificationData
    architecture: str
    dense: nn.Module
    dense_test_acc: float
    compressed: nn.Module
    report: TensorizeReport
    decomposed_test_acc: float

    def facts(self, config: CompressConfig) -> dict[str, Any]:
        """The record fields every fine-tuning run shares."""
        rep = self.report
        errors = [r.relative_error for r in rep.layers if r.relative_error is not None]
        return {
            "architecture": self.architecture,
            "data": self.data.name,
            "format": config.format,
            "ratio_requested": config.ratio,
            "rank_requested": config.rank,
            "layers": [r.name for r in rep.layers],
            "layer_ranks": {r.name: list(r.rank) for r in rep.layers},
            "layer_ratio": rep.layer_ratio,
            "model_ratio": rep.model_ratio,
            "params_dense": rep.model_params_before,
            "params_compressed": rep.model_params_after,
            "relative_error": sum(errors) / len(errors) if errors else None,
            "dense_test_acc": self.dense_test_acc,
            "decomposed_test_acc": self.decomposed_test_acc,
        }


@dataclass
class CompressExperiment:
    """Loads (or trains) the dense model and decomposes it once, then fine-tunes copies."""

    config: CompressConfig
    out_dir: Path | None = None
    resume: bool = True
    progress: ProgressFn | None = None
    _setups: dict[int, CompressionSetup] = field(default_factory=dict, repr=False)
    _splits: dict[int, Any] = field(default_factory=dict, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled for a worker process (``--jobs``) without the caller's progress callback, which only
        this process can draw."""
        return {**self.__dict__, "progress": None}

    def split(self, split: int) -> tuple[ClassificationData, tuple[torch.Tensor, torch.Tensor], Any]:
        """Split ``split``'s data (clean test set), the ``(inputs, labels)`` trained on (noisy with
        ``noise``) and the validation ``(inputs, labels)`` held out of them (None without one)."""
        if split not in self._splits:
            cfg = self.config
            data = load_split(cfg, split)
            y = data.y_train
            if cfg.noise > 0:
                y = corrupt_labels(y, data.num_classes, cfg.noise, cfg.noise_type, seed=split, dataset=data.name).labels
            train, validation = hold_out(cfg.validation_fraction, split, data.x_train, y)
            self._splits[split] = (data, train, validation)
        return self._splits[split]

    def _file(self, name: str, split: int) -> Path | None:
        """``OUT/name``, or ``OUT/name-seedS.pt`` for one split of a per-seed experiment."""
        if self.out_dir is None:
            return None
        return self.out_dir / (name.replace(".pt", f"-seed{split}.pt") if self.config.per_seed_split else name)

    def dense_identity(self, split: int | None = None) -> str:
        """Fingerprint of the dense model: the checkpoint's bytes, or the settings that train it."""
        cfg = self.config
        if cfg.checkpoint is not None:
            if not Path(cfg.checkpoint).is_file():
                raise FileNotFoundError(f"checkpoint not found: {cfg.checkpoint!r}")
            return "file:" + file_digest(cfg.checkpoint)
        return "trained:" + fingerprint("compress-dense", cfg.dense_settings(split))

    def _dense(self, split: int) -> tuple[nn.Module, str]:
        cfg = self.config
        data, train, _ = self.split(split)
        if cfg.checkpoint is not None:
            check_checkpoint_split(cfg.checkpoint, cfg)
            return load_dense_model(cfg.checkpoint, data.input_shape, data.num_classes, cfg.model)
        arch = cfg.architecture
        kwargs = network_kwargs(cfg.hidden) if parse_network_name(arch)[1] == "mlp" else {}
        torch.manual_seed(split)
        model = build_network(arch, data.input_shape, data.num_classes, **kwargs).to(torch.device(cfg.device))
        # Fail before training when the layers, ratio or rank cannot work (they depend on shapes only).
        check_target(model, select_layers(model, cfg.layers, cfg.exclude), cfg.format, rank=cfg.rank, ratio=cfg.ratio)
        train_classifier(
            model,
            cfg.dense_optimizer,
            train,
            (data.x_test, data.y_test),
            loop=cfg.dense_loop,
            seed=split,
            checkpoint=self._file(DENSE_TRAIN_CHECKPOINT, split),
            checkpoint_every_s=RUN_CHECKPOINT_EVERY_S,
            resume=self.resume,
            tag=fingerprint("compress-dense", cfg.dense_settings(split if cfg.per_seed_split else None)),
            progress=self.progress,
            label="dense" if not cfg.per_seed_split else f"dense s{split}",
        )
        path = self._file(DENSE_FILE, split)
        if path is not None:  # reusable with --checkpoint
            extra = {"data_split": split_facts(cfg.data_settings(split))}
            save_dense_model(path, model, arch, data.input_shape, data.num_classes, kwargs, extra)
        return model, arch

    def setup(self, seed: int | None = None) -> CompressionSetup:
        """Dense model, decomposition and their test accuracies of run seed ``seed``'s split (default:
        ``split_seed``), computed once per split, on first use."""
        cfg = self.config
        split = cfg.split_seed if seed is None else cfg.split_of(seed)
        if split not in self._setups:
            data = self.split(split)[0]
            dense, arch = self._dense(split)
            dense = dense.to(torch.device(cfg.device))
            names = select_layers(dense, cfg.layers, cfg.exclude)
            check_target(dense, names, cfg.format, rank=cfg.rank, ratio=cfg.ratio)
            compressed, report = tensorize(
                dense, cfg.format, rank=cfg.rank, ratio=cfg.ratio, include=list(names), init="decompose"
            )
            self._setups[split] = CompressionSetup(
                data=data,
                architecture=arch,
                dense=dense,
                dense_test_acc=_accuracy(dense, data),
                compressed=compressed,
                report=report,
                decomposed_test_acc=_accuracy(compressed, data),
            )
        return self._setups[split]

    def run(self, optimizer: OptimizerConfig, seed: int, progress: ProgressFn | None = None) -> RunResult:
        """Fine-tune a copy of the decomposed model with ``optimizer``; curves start right after decomposition."""
        cfg = self.config
        setup = self.setup(seed)
        _, train, validation = self.split(cfg.split_of(seed))
        model = copy.deepcopy(setup.compressed)
        torch.manual_seed(seed)
        key = run_key(optimizer, seed)
        result = train_classifier(
            model,
            optimizer,
            train,
            (setup.data.x_test, setup.data.y_test),
            loop=cfg.loop,
            family=NAME,
            seed=seed,
            validation=validation,
            checkpoint=None if self.out_dir is None else self.out_dir / CHECKPOINTS_DIR / f"{key}.pt",
            checkpoint_every_s=RUN_CHECKPOINT_EVERY_S,
            resume=self.resume,
            tag=fingerprint(NAME, self.settings(), optimizer.as_dict(), seed),
            progress=progress,
            label=f"{optimizer.label} s{seed}",
        )
        final, best = result.final, result.best_row("test_acc")
        chosen, checkpoint = checkpoint_fields(result.history, ["test_acc"], diverged=result.diverged)
        record = {
            **setup.facts(cfg),
            **checkpoint,  # test_acc at the epoch of best validation accuracy, final_test_acc at the end
            "best_test_acc": best["test_acc"],
            "best_epoch": best["epoch"],
            "epochs": final["epoch"],
            "resumed_from_epoch": result.resumed_from,
            **result.record_fields(),
        }
        if cfg.noise > 0 or cfg.per_seed_split:
            record.update(
                noise=cfg.noise, noise_type=cfg.noise_type, split_seed=cfg.split_of(seed), n_train=len(train[1])
            )
        if validation is not None:
            record.update(validation_fields(chosen, cfg.validation_fraction, len(validation[1])))
        return RunResult(record=record, curve=[{k: row[k] for k in CURVE_COLUMNS} for row in result.history])

    @cached_property
    def _identity(self) -> str:
        return self.dense_identity()

    def settings(self) -> dict[str, Any]:
        """What determines a run besides its optimizer and seed: the settings and the dense model's
        identity (with ``per_seed_split`` the seed decides the dense model, and the seed is in each run's
        fingerprint already)."""
        return {**self.config.settings(), "dense": "per-seed" if self.config.per_seed_split else self._identity}


def run_compress(
    config: CompressConfig,
    *,
    out_dir: str | Path | None = None,
    resume: bool = True,
    progress: ProgressFn | None = None,
) -> list[RunResult]:
    """Get the dense model, decompose it, fine-tune with every optimizer on every seed.

    Finished fine-tuning runs in ``out_dir`` are reused (the dense model and the decomposition are then
    not recomputed); ``OUT/dense.pt`` keeps a dense model trained here.
    """
    exp = CompressExperiment(config, None if out_dir is None else Path(out_dir), resume, progress)
    if config.checkpoint is not None:
        exp.setup()  # a bad checkpoint, layer choice, ratio or rank fails here, even when every run is stored
    settings = exp.settings()
    return run_comparison(
        NAME,
        config,
        config.optimizer_configs,
        exp.run,
        TEST_ACC,
        settings=settings,
        out_dir=out_dir,
        resume=resume,
        progress=progress,
    )


def _accuracy(model: nn.Module, data: ClassificationData) -> float:
    device = next(model.parameters()).device
    return evaluate(model, data.x_test.to(device), data.y_test.to(device))[1]


def _title(config: CompressConfig) -> str:
    target = f"ratio {config.ratio:g}" if config.ratio is not None else f"rank {config.rank}"
    source = "checkpoint" if config.checkpoint is not None else f"trained {config.architecture}"
    return f"{config.format.upper()} compression at {target} of a {source} on {config.data}"


def plot_compress(results: Sequence[RunResult], config: CompressConfig):
    """Test accuracy and Q against fine-tuning epochs (epoch 0: right after decomposition)."""
    panels = {"test_acc": "test accuracy", "Q": "norm deviation Q (mean over groups)"}
    return curve_figure(
        results, "epoch", panels, yscales={"Q": "log"}, xlabel="fine-tuning epoch", title=_title(config)
    )


def compress_table(results: Sequence[RunResult], config: CompressConfig):
    """Mean ± std over seeds of the fine-tuned accuracy, Q and times; the caption holds what every run shares.

    The dense model, its decomposition and their accuracies are the same for every run of an experiment,
    so they are stated once, under the table: dense accuracy, accuracy right after decomposition,
    ranks, the achieved ratios and the parameter counts.
    """
    caption = None
    if results:
        r = results[0].record
        ranks = ", ".join(f"{name} {'x'.join(map(str, rank))}" for name, rank in r["layer_ranks"].items())
        caption = (
            f"test accuracy: dense {r['dense_test_acc']:.4g}, right after decomposition "
            f"{r['decomposed_test_acc']:.4g}; {r['format'].upper()} ranks: {ranks}; achieved ratio "
            f"{r['layer_ratio']:.4g} over the decomposed layers, {r['model_ratio']:.4g} over the model "
            f"({r['params_dense']} -> {r['params_compressed']} parameters)"
        )
    return summary_table(
        results,
        {
            "test_acc": "fine-tuned acc (checkpoint)",
            "final_test_acc": "final acc",
            "best_test_acc": "best acc",
        },
        title=f"{_title(config)}, {config.epochs} fine-tuning epochs, {len(config.seeds)} seed(s)",
        caption=caption,
    )


# The record fields a comparison may be decided on, the default first.
METRICS = (
    TEST_ACC,
    Metric("final_test_acc", "fine-tuned test accuracy at the last epoch"),
    Metric("best_test_acc", "best fine-tuned test accuracy"),
    TRAIN_LOSS,
    Metric("decomposed_test_acc", "test accuracy right after decomposition"),
    Metric("dense_test_acc", "test accuracy of the dense model"),
    Q,
)
TASK = Task(
    NAME, TITLE, CompressConfig, run_compress, compress_table, plot_compress, METRICS, CURVE_COLUMNS, command="compress"
)
write_compress = TASK.write_outcome  # curves.csv, compress.png, config.json and, last, results.json
