"""An exponential moving average of the weights (`--ema DECAY`), for evaluation and inference.

After optimizer step t (1, 2, ...) every floating tensor of the average moves towards the
model's: avg += (1 - d_t) * (weight - avg), with d_t = min(decay, (1 + t) / (10 + t)). The
warm-up of d_t keeps the average from clinging to the random initialisation in a short run (at
step 8 it weighs the newest weights by 1/2, not by 1 - decay). Integer buffers are copied.

The average lives on the main rank only (every rank's weights are the same after a DDP step) and
travels in the checkpoint as `ema_state_dict` beside the training weights (`state_dict`), so a
resume continues both exactly and open_clip's own readers still find the weights they expect;
`trainer.inference.load` prefers the average where a checkpoint has one.
"""

import copy

import torch


class WeightAverage:
    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)  # the bare model
        self._pairs = None  # (averages, weights) of the float tensors, (average, weight) others

    def decay_at(self, step: int) -> float:
        return min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        """Fold in `model`'s weights after optimizer step `step` (1-based)."""
        if self._pairs is None:  # state_dict tensors share storage with the modules' own
            mine, theirs = self.model.state_dict(), model.state_dict()
            floats = [k for k in mine if mine[k].is_floating_point()]
            others = [(mine[k], theirs[k]) for k in mine if not mine[k].is_floating_point()]
            self._pairs = ([mine[k] for k in floats], [theirs[k] for k in floats]), others
        (averages, weights), others = self._pairs
        if averages:
            torch._foreach_lerp_(averages, weights, 1.0 - self.decay_at(step))
        for average, weight in others:
            average.copy_(weight)

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)
        self._pairs = None
