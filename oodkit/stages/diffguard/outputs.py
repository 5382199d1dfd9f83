"""DiffGuard's outputs: one scores artifact per distance (and per combination with a post-hoc
baseline), and the syntheses preview."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from oodkit.artifacts import Artifact, check_output, column, load_artifact, write_artifact
from oodkit.errors import OodkitError
from oodkit.schemas import ScoresParams, SetScores, scores_dataset
from oodkit.scoring.options import ScoreOptions
from oodkit.stages.diffguard.recipe import (
    Recipe,
    recipe_tag,
)


@dataclass
class Target:
    """One output artifact: a distance alone, or combined with the baseline."""

    name: str
    distance: str
    path: Path
    params: dict[str, Any]
    existing: Artifact | None
    combined: bool = False


def targets_of(r: Recipe, o, base_params, inputs, out: Path, baseline) -> list[Target]:
    names = [(d, d, False) for d in r.distances]
    if baseline is not None:
        b = ScoresParams.read(baseline.manifest.params).method
        names += [(f"{d}+{b}", d, True) for d in r.distances]
    targets = []
    for name, d, combined in names:
        nocam = "-nocam" if r.guidance == "cfg" and not o.cam else ""
        oracle = "-oracle" if o.oracle else ""
        tag = f"diffguard-{r.guidance}{recipe_tag(r)}{nocam}{oracle}-{d}"
        params = {**base_params, "distance": d, "label": f"{base_params['label']}+{tag}"}
        if combined:
            params.update(
                method=f"diffguard+{b}",
                label=f"{params['label']}+{b}",
                trust_below=o.trust_below,
                trust_above=o.trust_above,
            )
        path = out if len(names) == 1 and not o.save_syntheses else out / name
        existing = check_output(path, "scores", params, inputs, o.overwrite)
        targets.append(Target(name, d, path, params, existing, combined))
    return targets


def baseline_artifact(o: ScoreOptions, det, benchmark: str):
    """The post-hoc scores artifact to combine with, checked against this run."""
    from oodkit.methods import SCORE

    if o.combine_with is None:
        return None
    art = load_artifact(o.combine_with, kind="scores")
    p = ScoresParams.read(art.manifest.params)
    method = p.method
    if method not in SCORE.names() or "model" in SCORE.get(method).needs:
        raise OodkitError(
            f"--combine-with {o.combine_with}: not a post-hoc scores artifact (method {method!r})"
        )
    if "outliers" in SCORE.get(method).needs:
        raise OodkitError(
            f"--combine-with {o.combine_with}: {method} scores need the detector's outliers; "
            "combine with a method that needs none"
        )
    if p.benchmark != benchmark:
        raise OodkitError(
            f"--combine-with {o.combine_with} scores benchmark {p.benchmark!r}, not {benchmark!r}"
        )
    recorded = str(p.detector)
    same = (
        recorded == det.ref
        if det.ref or recorded.startswith("hub:")
        else Path(recorded).resolve() == Path(det.path).resolve()
    )
    if not same:
        raise OodkitError(
            f"--combine-with {o.combine_with} was made with another detector ({p.detector})"
        )
    return art


def scored_sets(bench, combining: bool) -> list[tuple[str, str, str]]:
    """(load key, set name, group) of the scored sets; ID validation for a combination."""
    sets = [("id_test", bench.id_test.name, "id")] + [(s.name, s.name, s.group) for s in bench.ood]
    if combining:
        if bench.id_val is None:
            raise OodkitError(
                f"benchmark {bench.name} has no ID validation set to fit the combination on"
            )
        sets.append(("id_val", bench.id_val.name, "id-val"))
    return sets


def _preview(path: Path, ds) -> None:
    """Rows of (input, unguided, guided), upscaled for viewing (no unguided cell with
    ``--reference input``)."""
    from PIL import Image

    cell = 96
    canvas = Image.new("RGB", (3 * (cell + 8), len(ds) * (cell + 4)), "white")
    for r, row in enumerate(ds):
        for j, name in enumerate(("input", "unguided", "guided")):
            if row[name] is None:
                continue
            canvas.paste(
                row[name].convert("RGB").resize((cell, cell), Image.NEAREST),
                (j * (cell + 8), r * (cell + 4)),
            )
    canvas.save(path)


def write_syntheses(path: Path, params, inputs, table, items) -> Artifact:
    """The kept samples' inputs, syntheses and scores as their own artifact, with
    ``preview.png`` (ID rows first, then OOD)."""
    kept = [j for j, im in enumerate(table["input"]) if im is not None]
    order = sorted(kept, key=lambda j: items[j].group not in ("id", "id-val"))
    ds = table.select(order)
    info = {
        "dataset": [items[j].dataset for j in order],
        "group": [items[j].group for j in order],
        "sample_id": [items[j].sample_id for j in order],
    }
    for name, values in info.items():
        ds = ds.add_column(name, values)
    return write_artifact(
        path,
        "syntheses",
        params,
        inputs,
        dataset=ds,
        summary={"samples": len(ds)},
        write_files=lambda folder: _preview(folder / "preview.png", ds),
    )


def baseline_scores(base, det, model, bench, loaded, items, o) -> tuple[np.ndarray, np.ndarray]:
    """The baseline's id_score for every scored test item (from its artifact) and for the ID
    validation items (recomputed with its method and recorded parameters, fitted as
    ``score`` fits it)."""
    from oodkit.methods import SCORE
    from oodkit.models.imported import class_map
    from oodkit.schemas import table_of
    from oodkit.scoring.common import SetData
    from oodkit.scoring.fitting import FIT_SETS, Scoring, fit_set

    ds = table_of(base)
    by_key = {
        f"{d}/{s}": v
        for d, s, v in zip(
            column(ds, "dataset"), column(ds, "sample_id"), column(ds, "id_score"), strict=True
        )
    }
    test = [it for it in items if it.group != "id-val"]
    missing = [it.key for it in test if it.key not in by_key]
    if missing:
        raise OodkitError(f"--combine-with {base.path} has no score for {missing[0]!r}")
    method = SCORE.get(ScoresParams.read(base.manifest.params).method)
    params = SCORE.resolve(method, base.manifest.params)  # the options its method declares
    columns = class_map(model.config, bench.class_names, bench.class_ids)
    run = Scoring(model, det.manifest.fingerprint, columns, o.batch_size, o.num_workers, o.cache)
    refs = {k: run.outputs(fit_set(bench, k), "true") for k in FIT_SETS if k in method.needs}
    scorer = method.load()(run.fit(method, params, refs))
    val_set = loaded["id_val"].select([it.row for it in items if it.group == "id-val"])
    val_scores = scorer(SetData(run.outputs(val_set), run.batches(val_set)))
    return np.array([by_key[it.key] for it in test]), np.asarray(val_scores, dtype=np.float64)


def write_targets(targets, table, items, o, inputs, summary, base_scores) -> None:
    """One scores artifact per target from the merged per-sample table."""
    from oodkit.scoring.combine import combine

    is_test = np.array([it.group != "id-val" for it in items])
    test = [it for it in items if it.group != "id-val"]
    pred = np.asarray(column(table, "pred"))[is_test]
    for t in targets:
        if t.existing is not None:
            continue
        values = np.asarray(table[f"score:{t.distance}"], dtype=np.float64)
        scores = values[is_test]
        if t.combined:
            base_test, base_val = base_scores
            scores = combine(
                base_test, scores, base_val, values[~is_test], o.trust_below, o.trust_above
            )
        sets = []
        for name in dict.fromkeys(it.dataset for it in test):
            idx = [j for j, it in enumerate(test) if it.dataset == name]
            group = test[idx[0]].group
            sets.append(
                SetScores(
                    name,
                    group,
                    [test[j].sample_id for j in idx],
                    scores[idx],
                    pred[idx],
                    [test[j].label for j in idx] if group == "id" else None,
                )
            )
        t.existing = write_artifact(
            t.path,
            "scores",
            t.params,
            inputs,
            dataset=scores_dataset(sets),
            summary=summary.as_dict(),
        )
