"""The paper's numbers, quoted beside ours in ``report.md``: one data module, no numbers elsewhere.

Source: the DAS ("Tensor-SAM") paper's proceedings PDF in the authors' public repository
ctxGou/Tensor-SAM, Tables 1-3 and 6, as transcribed in issue 14 of this project. Table 1 is not a
completion score: the authors' script (``src/td_study/run.py``) computes
``R² = 1 - ||(X̂ - X)·M||² / ||X·M||²`` with ``M`` the 30% *training* mask; our completion family's
``protocol = "paper"`` records that quantity as ``train_r2`` beside the held-out ``test_r2``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["PAPER", "PAPER_TABLES", "PAPER_ITERATIONS", "PaperTable"]

PAPER = 'the DAS paper ("Tensor-SAM"; PDF in the authors\' repository ctxGou/Tensor-SAM)'
PAPER_ITERATIONS = 50_000  # Table 1's Adam iterations (the authors' script)


@dataclass(frozen=True)
class PaperTable:
    """One of the paper's tables: its values by method (``base``, ``sam``, ``das``, plus references).

    Attributes:
        table: the paper's name for it (``Table 2``).
        setting: what was run, in the paper's words.
        quantity: what the values measure.
        values: method -> value; ``base`` is the paper's base optimizer (named in ``base_label``).
        base_label: the base optimizer's name in the paper.
        family: our experiment family that runs the matching comparison.
        ours: our record key for the same quantity (None: the step-time ratio, Table 6).
        references: extra rows of the paper (e.g. HOOI) with their values.
    """

    table: str
    setting: str
    quantity: str
    values: Mapping[str, float]
    base_label: str
    family: str
    ours: str | None
    references: Mapping[str, float] | None = None

    @property
    def share(self) -> float:
        """DAS's share of SAM's gain in the paper, ``(DAS - base) / (SAM - base)``."""
        v = self.values
        return (v["das"] - v["base"]) / (v["sam"] - v["base"])


PAPER_TABLES = (
    PaperTable(
        "Table 1",
        "Tucker rank (8, 6, 8) completion of the COVID-19 serology tensor, 30% of entries observed, "
        f"{PAPER_ITERATIONS:,} Adam iterations",
        "R² on the training entries",
        {"base": 0.9482, "sam": 0.9485, "das": 0.9484},
        "Adam",
        "completion",
        "train_r2",
        {"HOOI": 0.9268},
    ),
    PaperTable(
        "Table 2",
        "TR-ResNet-32 on CIFAR-10 with 40% label noise",
        "test accuracy (%)",
        {"base": 83.76, "sam": 86.59, "das": 84.35},
        "SGD",
        "noisy",
        "test_acc",
    ),
    PaperTable(
        "Table 3",
        "TT-ResNet-18 compression on ImageNet",
        "top-1 accuracy (%)",
        {"base": 65.47, "sam": 66.27, "das": 66.16},
        "SGD",
        "compress",
        "test_acc",
    ),
    PaperTable(
        "Table 6",
        "runtime relative to the base optimizer",
        "time per step / base's",
        {"base": 1.0, "sam": 2.0, "das": 1.04},
        "base",
        "",
        None,
    ),
)
