"""``--outlier-filter`` keeps exactly the rows its rules name; ``--outlier-weight`` draws in
proportion to its weights; both are recorded."""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import ImageOps

from oodkit.artifacts import write_artifact
from oodkit.data.sources import get_benchmark
from oodkit.errors import OodkitError
from oodkit.schemas import Judged, outlier_features
from oodkit.stages.train_detector.data import prepare_data
from oodkit.stages.train_detector.outlier_filter import keep_mask, parse_filter, weights_of
from oodkit.stages.train_detector.run import train_detector
from oodkit.training import epoch_batches

N = 40
RNG = np.random.default_rng(7)
SSIM = np.round(RNG.uniform(-0.1, 1.0, N), 3)
PSNR = np.round(RNG.uniform(5, 30, N), 2)
LEFT = RNG.choice([-1, 0, 1], N, p=[0.1, 0.4, 0.5]).astype(np.int8)
REACHED = np.where(LEFT == 1, RNG.choice([0, 1], N), np.where(LEFT == 0, 0, -1)).astype(np.int8)


def _table(ids: list[str] | None = None) -> datasets.Dataset:
    train = get_benchmark("digits").load("id_train").select(range(N))
    return datasets.Dataset.from_dict(
        {
            "image": [ImageOps.invert(im) for im in train["image"]],
            "sample_id": ids or [f"o/{i:03d}" for i in range(N)],
            "source_id": train["sample_id"],
            "source_label": train["label"],
            "condition": ["1"] * N,
            "id_condition": [str(y) for y in train["label"]],
            "ood_condition": ["1"] * N,
            "t_start": [5] * N,
            "start_timestep": [50] * N,
            "method": ["sd"] * N,
            "seed": [0] * N,
            "ssim": SSIM.tolist(),
            "psnr": PSNR.tolist(),
        },
        features=outlier_features(),
    )


def _judged(ds) -> Judged:
    return Judged(np.asarray(ds["sample_id"]), np.zeros(N, np.int64), LEFT, REACHED)


@pytest.fixture(scope="module")
def judged_outliers(tmp_path_factory) -> Path:
    """An outliers artifact with the judge's verdict file, as ``generate --judge`` writes."""
    ds = _table()
    out = tmp_path_factory.mktemp("filt") / "outliers"
    art = write_artifact(
        out, "outliers", {"method": "sd"}, dataset=ds, write_files=_judged(ds).save
    )
    return art.path


@pytest.mark.parametrize(
    ("text", "rows"),
    [
        ("left", LEFT == 1),
        ("!left", LEFT == 0),  # unknown verdicts (−1) are kept by neither
        ("reached", REACHED == 1),
        ("!reached", REACHED == 0),
        ("ssim<0.5", SSIM < 0.5),
        ("ssim>=0.5", SSIM >= 0.5),
        ("psnr>12.5", PSNR > 12.5),
        ("psnr <= 20", PSNR <= 20),
        ("left, ssim<0.6, psnr>10", (LEFT == 1) & (SSIM < 0.6) & (PSNR > 10)),
    ],
)
def test_a_filter_keeps_exactly_the_rows_its_rules_name(text, rows) -> None:
    ds = _table()
    assert keep_mask(parse_filter(text), ds, _judged(ds), "x").tolist() == rows.tolist()


@pytest.mark.parametrize("text", ["lefts", "ssim<", "ssim<high", "ssim=0.5", "psnr>nan", ""])
def test_a_bad_rule_is_refused(text) -> None:
    with pytest.raises(OodkitError, match="is not a rule"):
        parse_filter(text)


def test_training_sees_the_kept_rows_and_records_the_counts(judged_outliers, tmp_path) -> None:
    from oodkit.stages.train_detector.options import TrainOptions

    want = np.flatnonzero((LEFT == 1) & (SSIM < 0.7))
    o = TrainOptions(
        loss="oe", outliers=[str(judged_outliers)], outlier_filter="left,ssim<0.7"
    ).resolved()
    data = prepare_data("digits", o)
    every = _table()
    kept = [np.asarray(im).tobytes() for im in data.outliers.table["image"]]
    assert kept == [np.asarray(every[int(i)]["image"]).tobytes() for i in want]
    assert data.outlier_counts == {str(judged_outliers): [len(want), N]}
    det = train_detector(
        "digits",
        tmp_path / "d",
        o,
        epochs=1,
        batch_size=32,
        quiet=True,
        arch_kwargs={"channels": [8, 8, 8, 8], "stem_width": 8},
    )
    assert det.manifest.params["outlier_filter"] == "left,ssim<0.7"
    # the manifest holds the values the loss used, its defaults filled in; others unset
    p = det.manifest.params
    assert (p["beta"], p["outlier_weight"], p["sd_lambda"], p["club_lr"]) == (
        0.5,
        "uniform",
        None,
        None,
    )
    assert det.manifest.summary["outliers_kept"] == {str(judged_outliers): [len(want), N]}
    # the kept rows' diagnostics, by hand: every kept row left its class (rule "left")
    kept = det.manifest.summary["kept_diagnostics"][str(judged_outliers)]
    reached = REACHED[want]
    assert kept["mean_ssim"] == pytest.approx(SSIM[want].mean())
    assert kept["left_source"] == 1.0
    assert kept["reached_target"] == pytest.approx((reached == 1).sum() / (reached >= 0).sum())


def test_verdict_rules_need_a_judged_artifact(tmp_path) -> None:
    from oodkit.stages.train_detector.options import TrainOptions

    plain = write_artifact(tmp_path / "plain", "outliers", {"method": "sd"}, dataset=_table()).path
    o = TrainOptions(loss="oe", outliers=[str(plain)], outlier_filter="left").resolved()
    with pytest.raises(OodkitError, match="holds no judge verdicts"):
        prepare_data("digits", o)
    o = TrainOptions(loss="oe", outliers=[str(plain)], outlier_filter="ssim>2").resolved()
    with pytest.raises(OodkitError, match="keeps no outlier"):
        prepare_data("digits", o)
    with pytest.raises(OodkitError, match="--outlier-filter is an option of oe, energy, sona"):
        TrainOptions(outlier_filter="left").check()


def test_a_verdict_file_of_other_rows_is_refused(tmp_path) -> None:
    ds = _table()
    other = _table([f"p/{i:03d}" for i in range(N)])
    art = write_artifact(
        tmp_path / "o", "outliers", {"method": "sd"}, dataset=ds, write_files=_judged(other).save
    )
    from oodkit.stages.train_detector.options import TrainOptions

    o = TrainOptions(loss="oe", outliers=[str(art.path)], outlier_filter="left").resolved()
    with pytest.raises(OodkitError, match="does not match the rows of its table"):
        prepare_data("digits", o)


def test_dissimilarity_weights_draw_in_proportion() -> None:
    w = weights_of("dissimilarity", _table(), "x")
    assert (
        np.allclose(w, np.maximum(1 - SSIM, 0.01)) and weights_of("uniform", _table(), "x") is None
    )
    p = np.array([0.0, 0.0, 1.0, 3.0])
    one = epoch_batches(4, 8, seed=0, epoch=0, stream=1, steps=500, weights=p)
    drawn = np.bincount(np.concatenate(one), minlength=4) / (500 * 8)
    assert drawn[:2].sum() == 0 and drawn[3] / drawn[2] == pytest.approx(3, rel=0.1)
    ranks = [epoch_batches(4, 8, 0, 0, 1, 500, r, 2, weights=p) for r in range(2)]
    assert [sorted(a + b) for a, b in zip(*ranks, strict=True)] == [sorted(b) for b in one]


def test_the_diagnostics_of_kept_rows_skip_unknown_verdicts_and_missing_ssim() -> None:
    from oodkit.stages.train_detector.outlier_filter import diagnostics_of

    ds = _table()
    rows = np.flatnonzero(SSIM < 0.5)
    got = diagnostics_of(ds, _judged(ds), rows)
    left = LEFT[rows]
    assert got["left_source"] == pytest.approx((left == 1).sum() / (left != -1).sum())
    assert got["mean_ssim"] == pytest.approx(SSIM[rows].mean())
    unknown = np.flatnonzero(LEFT == -1)
    blind = diagnostics_of(ds.remove_columns("ssim"), _judged(ds), unknown)
    assert blind == {"mean_ssim": None, "left_source": None, "reached_target": None}
    assert diagnostics_of(ds, None, rows)["left_source"] is None


def test_a_missing_ssim_is_refused_not_dropped() -> None:
    """A row without SSIM (None / NaN) satisfies neither ``ssim<x`` nor ``ssim>=x`` and has no
    weight: refused, never silently left out."""
    values = SSIM.copy()
    values[3] = np.nan
    ds = _table().remove_columns("ssim").add_column("ssim", values.tolist())
    with pytest.raises(OodkitError, match="1 row\\(s\\) have no ssim value"):
        keep_mask(parse_filter("ssim<0.5"), ds, None, "o")
    with pytest.raises(OodkitError, match="have no ssim value"):
        weights_of("dissimilarity", ds, "o")
