"""What happens to the gradients between backward and the optimizer step, on the device.

In this order: per-parameter multipliers, Gaussian gradient noise, the global norm (reported,
and used to detect a non-finite step), clipping. Nothing here reads a tensor back to the
host, so a CUDA step is queued without waiting.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from pydantic import Field

from voltrain.config import StrictModel
from voltrain.errors import ConfigError
from voltrain.seeding import derive_seed

# Separates the gradient-noise stream from every other use of the trainer seed.
NOISE_STREAM = 0x6E6F697365


class ClippingConfig(StrictModel):
    """Gradient clipping (``trainer.clipping``).

    Attributes:
        mode: ``global_norm`` scales all gradients together so their joint norm is at most
            ``max_norm``; ``norm`` does so for each tensor on its own; ``value`` clamps every
            element to [-value, value]; ``adaptive`` clips the global norm at ``factor``
            times a running average (EMA) of past global norms; ``none`` leaves them.
        max_norm: the norm limit of ``global_norm`` and ``norm``.
        norm_type: the p of the p-norm (``inf`` for the largest element), in every mode.
        value: the element limit of ``value``.
        factor: the multiple of the average norm that ``adaptive`` clips at.
        ema_decay: the decay of ``adaptive``'s running average (closer to 1: longer memory).
    """

    mode: Literal["none", "norm", "global_norm", "value", "adaptive"] = "global_norm"
    max_norm: float = Field(1.0, gt=0)
    norm_type: float = Field(2.0, gt=0)
    value: float = Field(1.0, gt=0)
    factor: float = Field(2.0, gt=1)
    ema_decay: float = Field(0.99, gt=0, lt=1)


class GradientNoiseConfig(StrictModel):
    """Gaussian noise added to every gradient (``trainer.gradient_noise``).

    The standard deviation at iteration t is ``eta / (1 + t) ** gamma``.
    """

    eta: float = Field(gt=0)
    gamma: float = Field(0.55, ge=0)


def match_multipliers(
    patterns: Mapping[str, float], named_parameters: Sequence[tuple[str, torch.nn.Parameter]]
) -> dict[float, list[torch.nn.Parameter]]:
    """Parameters by gradient factor: each gets the factor of the first pattern that matches
    its whole name (shell-style glob, or a regular expression after ``re:``).

    A pattern that matches no parameter is a ``ConfigError``: it is almost always a typo.
    """
    compiled = []
    for pattern, factor in patterns.items():
        regex = pattern[3:] if pattern.startswith("re:") else fnmatch.translate(pattern)
        try:
            compiled.append((pattern, re.compile(regex), factor))
        except re.error as error:
            raise ConfigError(
                f"trainer.gradient_multipliers: '{pattern}' is not a valid pattern: {error}"
            ) from None
    groups: dict[float, list[torch.nn.Parameter]] = {}
    used = set()
    for name, parameter in named_parameters:
        for pattern, regex, factor in compiled:
            if regex.fullmatch(name):
                used.add(pattern)
                if factor != 1.0:
                    groups.setdefault(factor, []).append(parameter)
                break
    unused = [p for p in patterns if p not in used]
    if unused:
        example = named_parameters[0][0] if named_parameters else "none"
        raise ConfigError(
            f"trainer.gradient_multipliers: '{unused[0]}' matches no parameter "
            f"(names look like '{example}')"
        )
    return groups


class GradientProcessor:
    """Multipliers, noise, norm and clipping of one model's gradients, on its device.

    The adaptive-clipping average lives in device tensors and is saved with ``state_dict``.
    The noise is drawn from a generator reseeded from (seed, iteration) at every step, so it
    needs no saved state to resume exactly.
    """

    def __init__(
        self,
        clipping: ClippingConfig,
        noise: GradientNoiseConfig | None,
        multipliers: Mapping[str, float],
        model: torch.nn.Module,
        device: torch.device,
        seed: int,
    ):
        self.clipping = clipping
        self.noise = noise
        self.seed = seed
        self.device = device
        self.multiplier_groups = match_multipliers(multipliers, list(model.named_parameters()))
        self.generator = torch.Generator(device=device) if noise is not None else None
        # Sum of decayed norms and the number of finite steps averaged; 0 steps: no limit yet.
        self.ema_sum = torch.zeros((), dtype=torch.float32, device=device)
        self.ema_count = torch.zeros((), dtype=torch.float32, device=device)

    def process(
        self, parameters: Sequence[torch.nn.Parameter], loss: torch.Tensor, iteration: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Transform the gradients of ``parameters`` in place for the step that produces
        ``iteration + 1``.

        Returns the global gradient norm before clipping and a device bool: whether the loss
        and every gradient are finite.
        """
        with torch.no_grad():
            self._multiply()
            grads = [p.grad for p in parameters]
            self._add_noise(grads, iteration)
            norm_type = self.clipping.norm_type
            grad_norm = torch.nn.utils.get_total_norm(grads, norm_type, foreach=True)
            finite = torch.isfinite(loss) & torch.isfinite(grad_norm)
            self._clip(grads, grad_norm, finite)
        return grad_norm, finite

    def _multiply(self) -> None:
        for factor, group in self.multiplier_groups.items():
            grads = [p.grad for p in group if p.grad is not None]
            if grads:
                torch._foreach_mul_(grads, factor)

    def _add_noise(self, grads: list[torch.Tensor], iteration: int) -> None:
        if self.noise is None:
            return
        self.generator.manual_seed(derive_seed(self.seed, NOISE_STREAM, iteration))
        std = self.noise.eta / (1 + iteration) ** self.noise.gamma
        for grad in grads:
            noise = torch.randn(
                grad.shape, generator=self.generator, device=grad.device, dtype=grad.dtype
            )
            grad.add_(noise, alpha=std)

    def _clip(self, grads: list[torch.Tensor], grad_norm: torch.Tensor, finite) -> None:
        mode = self.clipping.mode
        if mode == "global_norm":
            _scale_to_limit(grads, grad_norm, self.clipping.max_norm)
        elif mode == "norm":
            norms = torch.stack(torch._foreach_norm(grads, self.clipping.norm_type))
            scales = torch.clamp(self.clipping.max_norm / (norms + 1e-6), max=1.0)
            torch._foreach_mul_(grads, list(scales.unbind()))
        elif mode == "value":
            torch._foreach_clamp_min_(grads, -self.clipping.value)
            torch._foreach_clamp_max_(grads, self.clipping.value)
        elif mode == "adaptive":
            limit = self.adaptive_limit
            _scale_to_limit(grads, grad_norm, limit)
            # The clipped norm enters the average, so one spike cannot raise the limit much.
            clipped = torch.minimum(grad_norm, limit)
            decay = self.clipping.ema_decay
            updated = decay * self.ema_sum + clipped
            self.ema_sum.copy_(torch.where(finite, updated, self.ema_sum))
            self.ema_count.add_(finite.to(self.ema_count.dtype))

    @property
    def adaptive_limit(self) -> torch.Tensor:
        """The adaptive clipping limit: ``factor`` times the bias-corrected EMA of the global
        norm (as Adam corrects its moments); inf before the first finite step."""
        decay = self.clipping.ema_decay
        average = self.ema_sum * (1 - decay) / (1 - decay**self.ema_count).clamp(min=1e-12)
        return torch.where(self.ema_count > 0, self.clipping.factor * average, math.inf)

    def state_dict(self) -> dict:
        return {"ema_sum": self.ema_sum.detach().cpu(), "ema_count": self.ema_count.detach().cpu()}

    def load_state_dict(self, state: dict) -> None:
        self.ema_sum.copy_(state["ema_sum"])
        self.ema_count.copy_(state["ema_count"])


def _scale_to_limit(grads: list[torch.Tensor], norm: torch.Tensor, limit) -> None:
    """Scale ``grads`` by min(1, limit / norm) on the device (``limit`` may be a tensor)."""
    torch._foreach_mul_(grads, torch.clamp(limit / (norm + 1e-6), max=1.0))
