"""Adversarial training on the input embeddings: FGM and PGD.

Text is discrete, so the adversary perturbs the embedding table instead of the words (Miyato et al.
2017): after the clean loss's backward pass, the table moves along its gradient, the loss on the
moved table is back-propagated on top of the clean gradients, and the table is put back before the
optimiser step. The model so learns to hold its prediction within a small ball around each word.

* FGM (fast gradient method): one step ``r = epsilon * g / ||g||``.
* PGD (projected gradient descent, Madry et al. 2018): ``steps`` steps of
  ``epsilon / steps * g / ||g||``, each projected back onto the ball ``||r|| <= epsilon`` around the
  clean table; only the last step's loss is added to the clean gradients.

``||g||`` is the L2 norm over the whole table; only the rows of the batch's tokens have a gradient,
so only they move. The clean table is restored exactly (a copy, not a subtraction).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["ADVERSARIAL", "EmbeddingAdversary"]

#: Accepted values of ``TrainingArgs.adversarial`` ("" is off).
ADVERSARIAL = ("", "fgm", "pgd")
#: The most PGD steps a run may take (a million had run for minutes in silence, never ending an epoch).
MAX_ADVERSARIAL_STEPS = 100


class EmbeddingAdversary:
    """Adds the adversarial loss's gradients after each clean backward pass.

    Args:
        model: The network being trained (its parameters' gradients are saved and restored by PGD).
        embedding: The input embedding table to perturb (``model.input_embeddings()``).
        method: ``"fgm"`` or ``"pgd"``.
        epsilon: Radius of the perturbation (L2 norm over the table).
        steps: PGD's steps (FGM takes one).
    """

    def __init__(self, model: nn.Module, embedding: nn.Embedding, method: str, epsilon: float, steps: int) -> None:
        if method not in ("fgm", "pgd"):
            raise ValueError(f"adversarial={method!r}; choose 'fgm' or 'pgd'")
        if epsilon <= 0:
            raise ValueError(f"adversarial_epsilon={epsilon} must be > 0")
        if steps < 1:
            raise ValueError(f"adversarial_steps={steps} must be >= 1")
        self.model = model
        self.weight = embedding.weight
        self.method = method
        self.epsilon = epsilon
        self.steps = 1 if method == "fgm" else steps

    def _direction(self) -> Tensor | None:
        grad = self.weight.grad
        if grad is None:
            return None
        norm = torch.linalg.vector_norm(grad.float())
        if not torch.isfinite(norm) or norm == 0:
            return None
        return grad / norm

    def step(self, adversarial_loss: Callable[[], Tensor]) -> float | None:
        """Run the attack; ``adversarial_loss`` computes the loss of the same batch (with grad).

        Returns the last adversarial loss, or None when the embedding had no usable gradient.
        """
        direction = self._direction()
        if direction is None:
            return None
        clean = self.weight.data.clone()
        saved: list[tuple[Tensor, Tensor]] = []
        if self.steps > 1:  # PGD: the clean gradients are put back before the last step's backward
            saved = [(p, p.grad.clone()) for p in self.model.parameters() if p.grad is not None]
        size = self.epsilon / self.steps
        loss = None
        try:
            for t in range(self.steps):
                if direction is None:  # no gradient to follow: keep the clean step's gradients
                    for param, grad in saved:
                        param.grad = grad
                    break
                self.weight.data.add_(direction, alpha=size)
                delta = self.weight.data - clean
                norm = torch.linalg.vector_norm(delta.float())
                if norm > self.epsilon:
                    self.weight.data.copy_(clean + delta * (self.epsilon / norm))
                last = t == self.steps - 1
                if self.steps > 1:
                    if last:
                        for param, grad in saved:
                            param.grad = grad
                    else:
                        self.model.zero_grad(set_to_none=True)
                loss = adversarial_loss()
                loss.backward()
                if not last:
                    direction = self._direction()
        finally:
            self.weight.data.copy_(clean)
        return None if loss is None else float(loss.detach())
