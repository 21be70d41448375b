r"""Core groups of Hugging Face PEFT tuners, found by a finder registered with
:func:`tensordas.register_core_group_finder` (PEFT stays optional: nothing here imports
``peft`` unless the model being searched already contains PEFT layers).

One group per adapted module and per adapter name, named ``<module path>.<adapter name>``.
A group lists every trainable factor of one multilinear product ``T``; frozen factors (e.g. an
inactive adapter, or LoRA-FA's frozen ``A``) are dropped by :func:`~tensordas.find_core_groups`,
and a group left with fewer than two trainable factors is dropped too.

========  =====================================  ===============================================  ==================
Tuner     Update ``Delta W`` (per adapter)       Group (per module and adapter name)              Why
========  =====================================  ===============================================  ==================
LoRA      ``s B A``                              ``[lora_A, lora_B]`` (weights); embeddings:      bilinear in (A, B)
                                                 ``[lora_embedding_A, lora_embedding_B]``
DoRA      ``m (W + s B A) / ||W + s B A||_col``  ``[lora_A, lora_B]``; magnitude ``m`` left out   uses B A only
AdaLoRA   ``s B (A * E) / ranknum``              ``[lora_A, lora_E, lora_B]``                     trilinear
LoHa      ``s (W1a W1b) ⊙ (W2a W2b)``            ``[hada_w1_a, hada_w1_b, hada_w2_a, hada_w2_b]``  4-linear: one group
                                                 (+ ``hada_t1, hada_t2``, conv CP cores)          (see below)
LoKr      ``s kron(W1, W2)``, ``W1 = w1`` or     the factors present: ``lokr_w1`` or             multilinear in all
          ``w1_a w1_b``, ``W2 = w2`` or          ``lokr_w1_a, lokr_w1_b``; ``lokr_w2`` or
          ``w2_a w2_b`` or CP(t2, w2_a, w2_b)    ``lokr_w2_a, lokr_w2_b`` (+ ``lokr_t2``)
========  =====================================  ===============================================  ==================

Why LoHa is one 4-core group and not two pairs. A core group is defined as a core group as cores that
enter the model only through a map linear in each core separately. ``(W1a W1b) ⊙ (W2a W2b)`` is
linear in each of the four factors, so all four form one group; each pair alone also qualifies
(with the other pair held fixed), but splitting loses symmetries: the Euler identity
``<G_k, dL/dG_k> = <Delta W, dL/dDelta W>`` holds for all four factors, so gradient flow conserves
every difference ``n_k - n_j``, across pairs too, and SAM's first-order drift
``2 rho gamma_k / ||g||`` moves norm between the pairs. DAS with the 4-core group reproduces that
drift for every difference; with two pair groups it could never move norm from one pair to
the other. (``tests/test_peft_discovery.py`` checks the cross-pair invariance and Euler identity.)

Caveats. AdaLoRA's orthogonality penalty (``orth_reg_weight``, added by ``AdaLoraModel.forward``
when the model computes the loss) depends on ``A`` and ``B`` separately and breaks the exact
scale invariance; LoRA's ``lora_bias`` and other additive terms are not factors. Tuners that are
not multilinear factorisations (IA3, VeRA's frozen shared matrices, prompt tuning, ...) give no
group. Initial zeros (LoRA's ``B``, AdaLoRA's ``E``, LoHa's ``w2_b``, LoKr's ``w1``) are handled by
DAS (``s_k = 1`` while ``n_k = 0``).
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from ..core_groups import register_core_group_finder

__all__ = ["PEFT_FINDER_NAME", "peft_core_groups"]

PEFT_FINDER_NAME = "PEFT tuner layers (LoRA, AdaLoRA, LoHa, LoKr)"


def _tensor(x: nn.Module | torch.Tensor) -> torch.Tensor:
    """A factor stored as a parameter or as the weight of a module (LoRA's ``nn.Linear``/conv)."""
    return x if isinstance(x, torch.Tensor) else x.weight


def _factors(module: nn.Module, attrs: tuple[str, ...], adapter: str) -> list[torch.Tensor]:
    """The factors ``getattr(module, a)[adapter]`` present for this adapter, in ``attrs`` order."""
    out = []
    for a in attrs:
        store = getattr(module, a, None)
        if store is not None and adapter in store:
            out.append(_tensor(store[adapter]))
    return out


def _adapter_names(module: nn.Module, attrs: tuple[str, ...]) -> list[str]:
    names: list[str] = []
    for a in attrs:
        for key in getattr(module, a, {}) or {}:
            if key not in names:
                names.append(key)
    return names


# (tuner layer class path, factor attribute tuples): one group per attribute tuple and adapter.
_LORA = (("lora_A", "lora_B"), ("lora_embedding_A", "lora_embedding_B"))
_ADALORA = (("lora_A", "lora_E", "lora_B"),)
_LOHA = (("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2"),)
_LOKR = (("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2"),)


def _tuner_table() -> list[tuple[type, tuple[tuple[str, ...], ...]]]:
    """PEFT layer classes, most specific first (AdaLoRA's layer subclasses LoRA's); tuners missing
    from the installed PEFT version are skipped."""
    import importlib

    table = []
    for module_name, cls_name, attrs in (
        ("peft.tuners.adalora.layer", "AdaLoraLayer", _ADALORA),
        ("peft.tuners.loha.layer", "LoHaLayer", _LOHA),
        ("peft.tuners.lokr.layer", "LoKrLayer", _LOKR),
        ("peft.tuners.lora.layer", "LoraLayer", _LORA),
    ):
        try:
            table.append((getattr(importlib.import_module(module_name), cls_name), attrs))
        except (ImportError, AttributeError):
            continue
    return table


_TABLE: list[tuple[type, tuple[tuple[str, ...], ...]]] | None = None


def peft_core_groups(name: str, module: nn.Module) -> dict[str, list[torch.Tensor]] | None:
    """Finder: ``{adapter name: factors}`` of a PEFT LoRA/AdaLoRA/LoHa/LoKr layer, ``None`` for any
    other module (:func:`~tensordas.find_core_groups` puts the module path in front of the name).

    Only looks at modules when ``peft`` is already imported (a model without PEFT layers never
    imports it).
    """
    global _TABLE
    if "peft" not in sys.modules:
        return None
    if _TABLE is None:
        _TABLE = _tuner_table()
    for cls, attr_sets in _TABLE:
        if isinstance(module, cls):
            groups = {}
            for attrs in attr_sets:
                for adapter in _adapter_names(module, attrs):
                    factors = _factors(module, attrs, adapter)
                    if len(factors) >= 2:
                        groups[adapter] = factors
            return groups
    return None


register_core_group_finder(PEFT_FINDER_NAME, peft_core_groups)
