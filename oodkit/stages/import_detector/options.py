"""Options of ``oodkit import detector`` (sources: ``oodkit.models.imported``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from oodkit import options as O
from oodkit.errors import OodkitError
from oodkit.models.preprocessing import INTERPOLATIONS, TRAINED_ON


def _floats(text: str | None, flag: str) -> list[float] | None:
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise OodkitError(f"{flag} takes comma-separated numbers, got {text!r}") from None
    if len(values) != 3:
        raise OodkitError(f"{flag} takes 3 numbers (R, G, B), got {len(values)}")
    return values


@dataclass(kw_only=True)
class ImportOptions:
    """Everything ``import_detector`` takes besides the source and the output folder."""

    weights: str | None = O.option(
        None, "Local weights file (safetensors or a state dict).", role="input"
    )
    trained_on: str | None = O.option(
        None,
        f"Training set ({', '.join(TRAINED_ON)}): its classes and OpenOOD's test preprocessing "
        "(over the source's; explicit options win).",
        choices=TRAINED_ON,
    )
    resize: int | None = O.option(
        None, "Eval resize before the crop.", minimum=1, maximum=O.MAX_IMAGE_SIDE
    )
    square: bool | None = O.option(
        None, "Resize both sides (else the shorter one).", flags=("--square/--no-square",)
    )
    crop: int | None = O.option(
        None, "Centre crop (the model's input size).", minimum=1, maximum=O.MAX_IMAGE_SIDE
    )
    mean: str | None = O.option(None, "Normalisation mean, R,G,B.")
    std: str | None = O.option(None, "Normalisation std, R,G,B.")
    interpolation: str | None = O.option(
        None, f"Resize filter: {', '.join(INTERPOLATIONS)}.", choices=INTERPOLATIONS
    )
    class_names: list[str] = O.option(
        help="Class names in label order (repeat the option; default: --trained-on's or the "
        "source's).",
        factory=list,
    )
    builder_kwargs: dict[str, Any] = O.option(
        help="python:MODULE:CALLABLE sources: the callable's keyword arguments as JSON "
        "(recorded; used again wherever the detector loads).",
        factory=dict,
        parse="json",
    )
    overwrite: bool = O.overwrite_option()
    quiet: bool = O.quiet_option()

    def check(self) -> None:
        _floats(self.mean, "--mean")
        std = _floats(self.std, "--std")
        if std is not None and min(std) <= 0:
            raise OodkitError("--std values must be positive")

    def overrides(self) -> dict:
        """The preprocessing fields given on the command line."""
        given = {
            "resize": self.resize,
            "crop": self.crop,
            "square": self.square,
            "interpolation": self.interpolation,
            "mean": _floats(self.mean, "--mean"),
            "std": _floats(self.std, "--std"),
        }
        return {k: v for k, v in given.items() if v is not None}
