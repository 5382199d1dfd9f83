"""Generation methods (registered in ``oodkit.methods``): the condition rows each evaluates
and the guidance it applies to them (docs/methods.md §3, §5).

Row 0 is always the unconditional prediction ε(x); the others follow ``rows``. Each method's
``guide`` is built per batch from the clean latents and runs inside the re-synthesis engine.

SONA and its global ablation take ``--ood-condition``: ``class`` draws c_OOD per sample (another
ID class of a class-conditional model, an OOD prompt of a text model); ``away`` sets
ψ_OOD = −ψ_ID (guidance away from the source class, no extra row); ``none`` sets ψ_OOD = 0
(the semantic region only loses its ID guidance). docs/methods.md §3 says which to use.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from oodkit.diffusion import guidance as G
from oodkit.methods import GENERATION

if TYPE_CHECKING:
    import torch


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


class _OodGuided(GenerationMethod):
    """A method guided toward an OOD condition chosen by ``--ood-condition``."""

    id_rows: tuple[str, ...] = ()  # rows before the OOD one
    base_convention = ""

    def __init__(self, opts) -> None:
        super().__init__(opts)
        self.ood_condition = opts.ood_condition
        self.uses_ood = self.ood_condition == "class"
        self.rows = (*self.id_rows, "ood") if self.uses_ood else self.id_rows or ("id",)
        derived = {"away": " (psi_ood = -psi_id)", "none": " (psi_ood = 0)"}
        self.convention = self.base_convention + derived.get(self.ood_condition, "")

    def condition_label(self, plan) -> str:
        if self.ood_condition == "class":
            return str(plan.ood_cond)
        return f"away:{plan.id_cond}" if self.ood_condition == "away" else "none"

    def ood_eps(self, e: torch.Tensor) -> torch.Tensor:
        """ε(x, c_OOD) of the rows ``e`` [n_conditions, A, ...]: its own row, or derived from
        ε(x) (row 0) and ε(x, c_ID) (row 1)."""
        if self.ood_condition == "class":
            return e[len(self.rows)]
        if self.ood_condition == "away":
            return 2 * e[0] - e[1]
        return e[0]


class Sona(_OodGuided):
    """ε̃ = ε(z) + s·Δ(ψ_ID, ψ_OOD), with optional momentum and warm-up."""

    id_rows = ("id",)
    base_convention = "eps_u + s*delta"

    def make_guide(self, x0):
        o = self.opts
        sona = G.SonaGuidance(o.scale, o.lam, o.momentum_scale, o.momentum_beta, o.warmup)
        sona.reset(x0)
        return lambda x, t, e, k, rows: sona(e[0], e[1], self.ood_eps(e), k, rows)


class WrongClass(GenerationMethod):
    """SD outliers: (1 + w)·ε(x, c_r) − w·ε(x), c_r a random other class."""

    t_start_in_timesteps = True
    convention = "(1+w)*eps_c - w*eps_u"

    def make_guide(self, x0):
        w = self.opts.w
        return lambda x, t, e, k, rows: G.sd_eps(e[1], e[0], w)


class Global(_OodGuided):
    """SONA's unmasked ablation: ε(z) + s·ψ_OOD."""

    base_convention = "eps_u + s*psi_ood"

    def make_guide(self, x0):
        scale = self.opts.scale
        return lambda x, t, e, k, rows: G.global_eps(self.ood_eps(e), e[0], scale)


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
