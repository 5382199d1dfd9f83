"""Training objectives of ``train detector``, one class per registered loss (``oodkit.methods``).

An objective says which heads the detector needs, computes one batch's loss from the ID batch
and (when its loss needs them) the outlier batch, concatenated into one forward, and may keep
state of its own (SONA's CLUB estimator and its optimiser, saved in the training checkpoint).
Formulas: docs/methods.md §3–§5.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from oodkit.stages.train_detector import losses
from oodkit.stages.train_detector.options import TrainOptions


class CrossEntropy:
    """CE on the ID batch; the base of every objective."""

    heads: tuple[str, ...] = ("cls",)

    def __init__(self, opts: TrainOptions, model, device) -> None:
        self.opts = opts

    def prepare(self, accelerator) -> None:
        """Wrap own modules for the accelerator (after the detector's own preparation)."""

    def loss(self, model, batch: dict[str, Any], device) -> torch.Tensor:
        x_id, y_id, _ = batch["id"]
        return F.cross_entropy(model(x_id.to(device))["logits"], y_id.to(device))

    def after_step(self, accelerator) -> None:
        """Extra updates after the detector's optimiser step."""

    def state_dict(self, accelerator) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""


class _WithOutliers(CrossEntropy):
    """ID and outlier images in one forward; ``extra`` adds the outlier term."""

    def forward(self, model, batch, device, *more: torch.Tensor):
        x_id, y_id, _ = batch["id"]
        x_id, y_id = x_id.to(device), y_id.to(device)
        x_out = batch["out"][0].to(device)
        out = model(torch.cat([x_id, x_out, *(m.to(device) for m in more)]))
        ce = F.cross_entropy(out["logits"][: len(x_id)], y_id)
        return out, ce, len(x_id), len(x_out)


class OutlierExposure(_WithOutliers):
    def loss(self, model, batch, device):
        out, ce, n_id, _ = self.forward(model, batch, device)
        return ce + self.opts.beta * losses.oe_loss(out["logits"][n_id:])


class EnergyMargin(_WithOutliers):
    def loss(self, model, batch, device):
        out, ce, n_id, _ = self.forward(model, batch, device)
        logits, o = out["logits"], self.opts
        return ce + o.energy_weight * losses.energy_margin_loss(
            logits[:n_id], logits[n_id:], o.m_in, o.m_out
        )


class Sona(_WithOutliers):
    """CE + β·OE + CLUB between each outlier's features and its source's (docs/methods.md §3–§4).

    CLUB runs on L2-normalised features: with raw features the main step can drive the bound
    to −∞ by inflating feature norms faster than the estimator follows (seen as divergence on
    digits); on the unit sphere the bound is bounded.
    """

    def __init__(self, opts: TrainOptions, model, device) -> None:
        super().__init__(opts, model, device)
        self.club = losses.ClubEstimator(model.feature_dim, model.feature_dim).to(device)
        self.club_opt = torch.optim.Adam(self.club.parameters(), lr=opts.club_lr)
        self._pair: tuple[torch.Tensor, torch.Tensor] | None = None

    def prepare(self, accelerator) -> None:
        self.club, self.club_opt = accelerator.prepare(self.club, self.club_opt)

    def loss(self, model, batch, device):
        out, ce, n_id, n_out = self.forward(model, batch, device, batch["out"][1])
        f_out = F.normalize(out["features"][n_id : n_id + n_out].float(), dim=1)
        f_src = F.normalize(out["features"][n_id + n_out :].float(), dim=1)
        mu, logvar = self.club(f_out)
        mi = losses.club_bound(mu, logvar, f_src)
        self._pair = (f_out.detach(), f_src.detach())
        oe = losses.oe_loss(out["logits"][n_id : n_id + n_out])
        return ce + self.opts.beta * oe + self.opts.club_weight * mi

    def after_step(self, accelerator) -> None:
        """A few estimator steps on the detached features, with the estimator's own optimiser."""
        f_out, f_src = self._pair
        for _ in range(self.opts.club_steps):
            mu, logvar = self.club(f_out)
            est = losses.club_estimator_loss(mu, logvar, f_src)
            self.club_opt.zero_grad(set_to_none=True)
            accelerator.backward(est)
            self.club_opt.step()

    def state_dict(self, accelerator) -> dict[str, Any]:
        return {
            "club": accelerator.unwrap_model(self.club).state_dict(),
            "club_opt": self.club_opt.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.club.load_state_dict(state["club"])
        self.club_opt.load_state_dict(state["club_opt"])


class ThreeHead(CrossEntropy):
    """The SD-outlier paper's binary + in-class + out-class heads (docs/methods.md §5)."""

    heads = ("cls", "bin", "out")

    def loss(self, model, batch, device):
        x_id, y_id, _ = batch["id"]
        x_out, y_out = batch["out"][0], batch["out"][1]
        n_id, n_out = len(x_id), len(x_out)
        out = model(torch.cat([x_id, x_out]).to(device))
        is_out = torch.cat([torch.zeros(n_id, device=device), torch.ones(n_out, device=device)])
        labels = torch.cat([y_id, y_out]).to(device)
        return losses.three_head_loss(
            out["bin"], out["logits"], out["out"], is_out, labels, self.opts.sd_lambda
        )
