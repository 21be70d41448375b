r"""Core groups of TensorLy-Torch (``tltorch``) factorized tensors, found by a finder registered with
:func:`tensordas.register_core_group_finder`. Nothing here imports ``tltorch``: the finder looks
at modules only once ``tltorch`` is in ``sys.modules``, which it is whenever the model holds one
of its modules.

The finder recognises the factorized *tensor* modules, so every layer built on them is covered:
``FactorizedLinear``, ``FactorizedConv``, ``FactorizedEmbedding``, ``TRL`` (their ``.weight``) and
any factorized tensor a module of yours holds. One group per tensor, named
``<path of the tensor>.<factorization>`` (``fc.weight.tucker``, ``emb.weight.blocktt``); the
layer's bias is not a core.

==================================  ==========================================  ===========================
Tensor (``tltorch`` class)          Map ``T``                                   Group
==================================  ==========================================  ===========================
CP (``CPTensor``, ``CPTensorized``)  ``sum_r w_r a_r (x) b_r (x) c_r ...``       ``[weights, *factors]``
Tucker (``TuckerTensor(ized)``)     ``core x_1 U_1 x_2 U_2 ...``                ``[core, *factors]``
TT (``TTTensor``)                   ``G_1 G_2 ... G_N`` (train of 3-way cores)  ``factors``
block-TT / TT-matrix (``BlockTT``)  ``G_1 ... G_N`` (4-way cores, TT-matrix)    ``factors``
Dense (``DenseTensor``)             the tensor itself                           none (one tensor)
TCL layer (``TCL``)                 ``x x_1 U_1 x_2 U_2 ...`` (+ bias)          ``[factor_0, ...]``
==================================  ==========================================  ===========================

Each map is linear in every listed core separately, so the group is scale-invariant:
``T(c_1 G_1, .., c_N G_N) = (c_1 .. c_N) T(G)``, unchanged when the product is 1.

**The CP weights vector is a core.** ``T`` is linear in ``w`` as in each factor, so
``(w, A, B, C)`` satisfies the definition and the Euler identity
``<G_k, dL/dG_k> = <T, dL/dT>`` holds for ``w`` as for every factor: gradient flow conserves
``n_w - n_A`` like any other difference, and SAM's first-order drift ``2 rho gamma_k / ||g||``
moves ``w``'s norm too. Leaving ``w`` out would keep the group scale-invariant but leave a trained
part of the product outside DAS, which could then never move norm between ``w`` and the factors.
(A ``weights`` held as a buffer, not a parameter, is not trained and not a core.)

**Several layers in one tensor** (``n_layers > 1``, ``FactorizedLinear.from_linear_list``): the
layer index is one more mode of the tensor (a CP/Tucker factor or the first TT core; a batched
mode of every block-TT core). Every layer's weight is multilinear in the same cores, so the
whole tensor is *one* group: scaling the cores by factors whose product is 1 leaves every layer
unchanged, and ``<G_k, dL/dG_k>`` is the sum over layers of ``<W_i, dL/dW_i>``, the same for all
cores. A core is one parameter shared by the layers, so it cannot belong to a group per layer
(for block-TT each layer's slices would even be scale-invariant on their own, a finer symmetry
that whole-parameter scaling cannot use). Sub-layers from ``get_linear`` reach the same tensor
module and give no second group.

Complex tensors (``ComplexCP``, ...) store each core as a real view ``(..., 2)``; scaling it by a
real factor scales the complex core, so the groups are the same with those real parameters.
Not cores: the lasso weights a ``TensorLasso`` hook adds (its L1 penalty is not scale-invariant).
TCL with ``bias=True`` is fine (the bias is added after the product) but is not a core.
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from ..core_groups import register_core_group_finder

__all__ = ["TLTORCH_FINDER_NAME", "tltorch_core_groups"]

TLTORCH_FINDER_NAME = "TensorLy-Torch factorized tensors (CP, Tucker, TT, block-TT) and TCL layers"


def _own(module: nn.Module, attr: str) -> list[torch.Tensor]:
    """``[module.<attr>]`` when it is a parameter, read raw (complex tensors' getattr gives a view)."""
    p = module._parameters.get(attr)
    return [] if p is None else [p]


def _factors(module: nn.Module) -> list[torch.Tensor]:
    """The parameters of a ``FactorList`` in factor order (its ``keys``; raw, not complex views)."""
    factors = module.factors
    return [factors._parameters[k] for k in factors.keys if factors._parameters.get(k) is not None]


def _kinds() -> list[tuple[type, object]]:
    """(tltorch class, cores of an instance), most specific first; complex classes subclass these."""
    from tltorch.factorized_layers.tensor_contraction_layers import TCL
    from tltorch.factorized_tensors.factorized_tensors import CPTensor, DenseTensor, TTTensor, TuckerTensor
    from tltorch.factorized_tensors.tensorized_matrices import BlockTT

    return [
        (DenseTensor, lambda m: []),
        (CPTensor, lambda m: _own(m, "weights") + _factors(m)),
        (TuckerTensor, lambda m: _own(m, "core") + _factors(m)),
        (TTTensor, _factors),
        (BlockTT, _factors),
        (TCL, lambda m: [m._parameters[f"factor_{i}"] for i in range(m.order)]),
    ]


_KINDS: list[tuple[type, object]] | None = None


def tltorch_core_groups(name: str, module: nn.Module) -> dict[str, list[torch.Tensor]] | None:
    """Finder: ``{factorization: cores}`` of a tltorch factorized tensor or TCL layer, ``None`` for
    any other module (:func:`~tensordas.find_core_groups` puts the module path in front)."""
    global _KINDS
    if "tltorch" not in sys.modules:  # a model holding tltorch modules has imported it
        return None
    if _KINDS is None:
        _KINDS = _kinds()
    for cls, cores_of in _KINDS:
        if isinstance(module, cls):
            cores = cores_of(module)
            if len(cores) < 2:  # a dense tensor, or a single trainable core: nothing to balance
                return {}
            suffix = "tcl" if cls.__name__ == "TCL" else module.name.lower()
            return {suffix: cores}
    return None


register_core_group_finder(TLTORCH_FINDER_NAME, tltorch_core_groups)
