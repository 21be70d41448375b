"""The integrations package: importing tensordas imports no framework, and SAM's closure checks are a registry
that the Lightning integration plugs into (optim knows no framework)."""

import subprocess
import sys

import pytest
import torch

import tensordas as td
from tensordas.integrations.lightning import LIGHTNING_CHECK_NAME
from tensordas.optim.sam import register_closure_check, unregister_closure_check

FRAMEWORKS = ("transformers", "peft", "tltorch", "lightning", "pytorch_lightning")


def test_importing_tensordas_and_its_integrations_imports_no_framework():
    code = (
        "import sys, tensordas, tensordas.integrations, tensordas.integrations.lightning; "
        f"print(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def sam_problem():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    sam = td.SAM(model.parameters(), torch.optim.SGD, rho=0.1, lr=0.1)
    calls = []

    def closure():
        calls.append(1)
        sam.zero_grad()
        loss = model(torch.ones(2, 3)).pow(2).sum()
        loss.backward()
        return loss

    return sam, closure, calls


def test_a_registered_closure_check_runs_before_sams_first_pass_and_can_be_removed():
    sam, closure, calls = sam_problem()
    seen = []

    def refuse(c):
        seen.append(c)
        raise ValueError("this framework's closure cannot run twice")

    register_closure_check("toy framework", refuse)
    try:
        with pytest.raises(ValueError, match="cannot run twice"):
            sam.step(closure)
        assert seen == [closure] and calls == []  # refused before any pass
        with pytest.raises(ValueError, match="'toy framework' is already registered"):
            register_closure_check("toy framework", refuse)
    finally:
        unregister_closure_check("toy framework")
    sam.step(closure)
    assert len(calls) == 2 and len(seen) == 1
    with pytest.raises(ValueError, match="no SAM closure check named 'toy framework'"):
        unregister_closure_check("toy framework")


def test_importing_tensordas_registers_the_lightning_check():
    with pytest.raises(ValueError, match="already registered"):
        register_closure_check(LIGHTNING_CHECK_NAME, lambda closure: None)
