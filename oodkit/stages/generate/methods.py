"""Generation methods (registered in ``oodkit.methods``): the condition rows each evaluates
and the guidance it applies to them (docs/methods.md §3, §5).

Row 0 is always the unconditional prediction ε(x); the others follow ``rows``. Each method's
``guide`` is built per batch from the clean latents and runs inside the re-synthesis engine.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from oodkit.diffusion import guidance as G
from oodkit.methods import GENERATION


class GenerationMethod(ABC):
    """The condition rows and the guided ε of one method (defaults: its registration)."""

    rows: tuple[str, ...] = ("ood",)  # conditions after the unconditional row: "id" / "ood"
    t_start_in_timesteps = False  # --t-start counts training timesteps (the paper's S)
    uses_ood = True  # draws an OOD condition per sample
    convention = ""  # the guided ε as recorded in the manifest

    def __init__(self, opts) -> None:
        self.opts = opts

    def conditions(self, plans: Sequence[Any]) -> list[list[Any]]:
        """The denoiser's condition rows for a batch: ∅, then ``rows``."""
        pick = {"id": lambda p: p.id_cond, "ood": lambda p: p.ood_cond}
        return [[None] * len(plans), *[[pick[r](p) for p in plans] for r in self.rows]]

    def condition_label(self, plan) -> str:
        """What the ``condition`` column records for a sample."""
        return str(plan.ood_cond if self.uses_ood else plan.id_cond)

    @abstractmethod
    def make_guide(self, x0):
        """The batch's guidance: ``guide(x, t, eps, step_in_run, rows) -> ε̃``."""


class Sona(GenerationMethod):
    """ε̃ = ε(z) + s·Δ(ψ_ID, ψ_OOD), with optional momentum and warm-up."""

    rows = ("id", "ood")
    convention = "eps_u + s*delta"

    def make_guide(self, x0):
        o = self.opts
        sona = G.SonaGuidance(o.scale, o.lam, o.momentum_scale, o.momentum_beta, o.warmup)
        sona.reset(x0)
        return lambda x, t, e, k, rows: sona(e[0], e[1], e[2], k, rows)


class WrongClass(GenerationMethod):
    """SD outliers: (1 + w)·ε(x, c_r) − w·ε(x), c_r a random other class."""

    t_start_in_timesteps = True
    convention = "(1+w)*eps_c - w*eps_u"

    def make_guide(self, x0):
        w = self.opts.w
        return lambda x, t, e, k, rows: G.sd_eps(e[1], e[0], w)


class Global(GenerationMethod):
    """SONA's unmasked ablation: ε(z) + s·ψ_OOD."""

    convention = "eps_u + s*psi_ood"

    def make_guide(self, x0):
        scale = self.opts.scale
        return lambda x, t, e, k, rows: G.global_eps(e[1], e[0], scale)


class Reconstruct(GenerationMethod):
    """ID-preserving regeneration: ε(z) + s·ψ_ID."""

    rows = ("id",)
    uses_ood = False
    convention = "eps_u + s*psi_id"

    def make_guide(self, x0):
        scale = self.opts.scale
        return lambda x, t, e, k, rows: G.cfg_eps(e[1], e[0], scale)


def method_class(name: str) -> type[GenerationMethod]:
    """The registered method class of ``name`` (refused with the registered names)."""
    return GENERATION.get(name).load()
