"""Score methods through pytorch-ood's detectors (``pytorch_ood.detector``), registered in
``oodkit.methods`` with OpenOOD v1.5's default hyperparameters.

Each ``fit(Fit) → scorer`` builds the pytorch-ood detector on what oodkit already computed —
the cached features / logits of the reference set its registration names, the detector's
classifier layer (``Fit.head``) — fits it once, and scores every set from its cached outputs;
only ODIN runs the network again (input gradients). pytorch-ood returns outlier scores
(higher = OOD); oodkit's id_score is their negation. Features are the pooled penultimate
activations, so the activation-shaping methods (ReAct, ASH) act on them as B × D × 1 × 1 maps,
as OpenOOD applies them.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from oodkit.errors import OodkitError
from oodkit.scoring.common import Fit, Scorer, SetData

VIM_DIM = 256  # OpenOOD v1.5 configs/postprocessors/vim.yml


def _fit_set(
    fit: Fit, key: str, method: str, every_class: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, labels) of a reference set; ``every_class``: each class present (the
    class-conditional fits need a sample of each)."""
    ref = fit.sets[key]
    labels = ref["labels"]
    missing = sorted(set(range(fit.classes)) - set(labels.unique().tolist())) if every_class else []
    if missing:
        raise OodkitError(
            f"--method {method}: class {missing[0]} has no {key.replace('_', '-')} sample to fit"
        )
    return ref["features"], labels


def _maps(features: torch.Tensor) -> torch.Tensor:
    return features[:, :, None, None]


def _head_on_maps(head: nn.Linear):
    return lambda maps: head(maps.flatten(1))


def _features(score) -> Scorer:
    return lambda s: -score(s.outputs["features"]).float().cpu()


def _logits(score) -> Scorer:
    return lambda s: -score(s.outputs["logits"]).float().cpu()


def entropy(fit: Fit) -> Scorer:
    from pytorch_ood.detector import Entropy

    return _logits(Entropy(None).predict_logits)


def gen(fit: Fit) -> Scorer:
    from pytorch_ood.detector import GEN

    p = fit.params
    return _logits(GEN(None, gamma=p["gen_gamma"], M=p["gen_m"]).predict_logits)


def mahalanobis(fit: Fit) -> Scorer:
    from pytorch_ood.detector import Mahalanobis

    d = Mahalanobis(None).fit_features(*_fit_set(fit, "id_train", "mahalanobis", True))
    return _features(d.predict_features)


def rmd(fit: Fit) -> Scorer:
    from pytorch_ood.detector import RMD

    return _features(
        RMD(None).fit_features(*_fit_set(fit, "id_train", "rmd", True)).predict_features
    )


def vim(fit: Fit) -> Scorer:
    from pytorch_ood.detector import ViM

    z, y = _fit_set(fit, "id_train", "vim")
    dim = fit.params["vim_dim"]
    if dim is None:
        dim = min(VIM_DIM, z.shape[1] // 2)
    elif dim >= z.shape[1]:
        raise OodkitError(
            f"--vim-dim {dim} must be below the detector's feature dimension {z.shape[1]}"
        )
    head = fit.head
    return _features(ViM(None, dim, head.weight, head.bias).fit_features(z, y).predict_features)


def react(fit: Fit) -> Scorer:
    from pytorch_ood.detector import ReAct

    z = fit.sets["id_val"]["features"]
    d = ReAct(None, _head_on_maps(fit.head), percentile=fit.params["percentile"] / 100)
    d.fit_feature_maps(_maps(z), torch.zeros(len(z), dtype=torch.long))
    return _features(lambda f: d.predict_feature_maps(_maps(f)))


def ash(fit: Fit) -> Scorer:
    from pytorch_ood.detector import ASH

    p = fit.params
    dim = fit.head.in_features
    if round(dim * p["percentile"] / 100) >= dim:  # pytorch-ood would keep no activation
        raise OodkitError(
            f"--percentile {p['percentile']:g} prunes all {dim} features: ASH keeps at least one"
        )
    d = ASH(None, _head_on_maps(fit.head), p["ash_variant"], percentile=p["percentile"] / 100)
    return _features(lambda f: d.predict_feature_maps(_maps(f)))


def dice(fit: Fit) -> Scorer:
    from pytorch_ood.detector import DICE

    head = fit.head
    d = DICE(None, head.weight, head.bias, p=fit.params["dice_p"] / 100)
    return _features(d.fit_features(*_fit_set(fit, "id_train", "dice")).predict_features)


def she(fit: Fit) -> Scorer:
    from pytorch_ood.detector import SHE

    try:
        d = SHE(None, fit.head).fit_features(*_fit_set(fit, "id_train", "she", True))
    except ValueError as exc:  # a class without one correct prediction
        raise OodkitError(f"--method she: {exc} among the ID-train samples") from None
    return _features(d.predict_features)


def nnguide(fit: Fit) -> Scorer:
    from pytorch_ood.detector import NNGuide

    z, y = _fit_set(fit, "id_train", "nnguide")  # k ≤ ID-train size: checked by the stage
    k = fit.params["k"]
    rows = guide_rows(len(z), fit.params["nnguide_alpha"], k)
    return _features(NNGuide(None, fit.head, k=k).fit_features(z[rows], y[rows]).predict_features)


def guide_rows(n: int, alpha: float, k: int) -> torch.Tensor:
    """NNGuide's bank: ⌈α·n⌉ of the n ID-train rows (OpenOOD v1.5: α = 0.01 of a shuffled
    loader), at least k, evenly spaced so that it needs no seed and spans the set's order."""
    size = min(n, max(math.ceil(alpha * n), k))
    return torch.arange(size) * n // size  # distinct: n ≥ size


def klm(fit: Fit) -> Scorer:
    from pytorch_ood.detector import KLMatching

    return _logits(KLMatching(None).fit_logits(fit.sets["id_val"]["logits"]).predict_logits)


def openmax(fit: Fit) -> Scorer:
    """Fitted on the correctly classified ID-train samples' logits, Euclidean distances to
    the class means (OpenOOD's OpenMax)."""
    from pytorch_ood.detector import OpenMax

    ref = fit.sets["id_train"]
    logits, labels = ref["logits"], ref["labels"]
    right = logits.argmax(1) == labels
    p = fit.params
    d = OpenMax(None, tailsize=p["openmax_tailsize"], alpha=p["openmax_alpha"], euclid_weight=1.0)
    return _logits(d.fit_logits(logits[right], labels[right]).predict_logits)


def gradnorm(fit: Fit) -> Scorer:
    """‖∂ KL(uniform ‖ softmax(head(z)/T)) / ∂W‖₁ of the classifier layer's weight, as
    OpenOOD's GradNorm (its sum over classes scales the score by C: the ranking is equal)."""
    from pytorch_ood.detector import GradNorm

    d = GradNorm(
        fit.head, param_filter=lambda name: name == "weight", temperature=fit.params["temperature"]
    )
    return _features(d.predict)


def odin(fit: Fit) -> Scorer:
    """Max softmax at temperature T of each image moved by ε·sign(−∇ log-softmax of the
    predicted class), ε in pixel units (divided by the normalisation's std, as OpenOOD)."""
    from pytorch_ood.detector import ODIN

    p = fit.params
    d = ODIN(
        fit.network, eps=p["odin_eps"], temperature=p["temperature"], norm_std=list(fit.input_std)
    )

    def score(s: SetData) -> torch.Tensor:
        return torch.cat([-d.predict(x).detach().float().cpu() for x in s.batches()])

    return score
