"""Integrations with other people's frameworks, one module each; none imports its framework by itself.

- :mod:`.peft` and :mod:`.tltorch`: core-group finders for Hugging Face PEFT tuners and TensorLy-Torch
  factorized tensors, registered with :func:`tensordas.register_core_group_finder` when this package is
  imported (``import tensordas`` does); they look at a module only once ``peft``/``tltorch`` is imported.
- :mod:`.lightning`: the check that refuses PyTorch Lightning settings under which ``td.SAM``'s two passes
  would be wrong, registered with :func:`tensordas.optim.sam.register_closure_check` likewise.
- :mod:`.trainer` (imported explicitly; needs ``transformers``): ``DASTrainer`` runs the method registry's
  optimizers under ``transformers.Trainer``.
"""

from . import lightning, peft, tltorch

__all__ = ["lightning", "peft", "tltorch"]
