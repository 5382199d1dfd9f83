"""Classifiers trained outside oodkit, as detectors: torchvision, timm, OpenOOD v1.5 and
pytorch-ood models, with the preprocessing and classes they were trained with.

A source is one string: ``torchvision:NAME[:WEIGHTS]`` (a weights enum member, e.g.
``torchvision:resnet50:IMAGENET1K_V1``), ``timm:NAME[.TAG]``, ``openood:ARCH``
(``resnet18_32x32``, ``resnet18_224x224``, ``resnet50``), ``pytorch-ood:KEY`` (its model
registry, e.g. ``resnet-18/imagenet200/crossentropy/s1``) or ``python:MODULE:CALLABLE`` (any
``nn.Module`` that an importable function of the user's builds, with keyword arguments
recorded in the artifact; the function is imported again wherever the detector loads).
Weights come from a local file, or for named weights from the library's download cache, never
from the network here: a missing file is one line saying what to fetch and where to put it.

The network keeps its own module tree (checkpoints in the original key layout load strictly,
and the detector artifact stores them in that layout); :class:`ImportedClassifier` returns
what score methods read: the input of the final linear layer (penultimate features, taken by
a forward hook) and the logits.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from oodkit.errors import OodkitError, first_line
from oodkit.hashing import file_digest, file_input
from oodkit.models.preprocessing import INTERPOLATIONS, Preprocessing

LIBRARIES = ("torchvision", "timm", "openood", "pytorch-ood", "python")
# torchvision builders that change the module when given weights (transform_input, aux heads)
TORCHVISION_BUILDER_ARGS = ("googlenet", "inception_v3")


@dataclass
class Source:
    """A parsed source string."""

    library: str
    name: str  # architecture; the registry key for pytorch-ood
    weights: str | None = None  # torchvision weights enum member

    def __str__(self) -> str:
        return f"{self.library}:{self.name}" + (f":{self.weights}" if self.weights else "")


def parse_source(text: str) -> Source:
    """``library:name[:weights]``; one line naming the accepted forms otherwise."""
    library, _, rest = text.partition(":")
    if library not in LIBRARIES or not rest:
        raise OodkitError(
            f"classifier source {text!r}: expected torchvision:NAME[:WEIGHTS], timm:NAME, "
            "openood:ARCH, pytorch-ood:KEY or python:MODULE:CALLABLE"
        )
    if library == "python" and (rest.count(":") != 1 or "" in rest.split(":")):
        raise OodkitError(f"classifier source {text!r}: expected python:MODULE:CALLABLE")
    name, _, weights = rest.partition(":") if library == "torchvision" else (rest, "", "")
    if library == "openood":
        from oodkit.models.openood import ARCHITECTURES

        if name not in ARCHITECTURES:
            raise OodkitError(
                f"unknown OpenOOD architecture {name!r} (one of {', '.join(ARCHITECTURES)})"
            )
    return Source(library, name, weights or None)


@dataclass
class Imported:
    """A classifier with loaded weights and what is known about it."""

    net: nn.Module
    arch: dict[str, Any]  # how to rebuild the module: library, name, num_classes, head
    preprocessing: Preprocessing | None
    class_names: list[str] | None
    class_ids: list[str] | None
    weights: dict[str, Any] = field(default_factory=dict)  # provenance: what was loaded


# --- building -----------------------------------------------------------------------------


def _registry_entry(key: str):
    try:
        from pytorch_ood.model import registry
    except ImportError:
        raise OodkitError("pytorch-ood sources need the pytorch-ood package installed") from None
    try:
        return registry.get_model_info(key)
    except ValueError as exc:
        why = first_line(exc).split(". Available")[0]  # not the whole registry
        raise OodkitError(f"pytorch-ood: {why} (see pytorch_ood.model.list_models())") from None


def python_builder(name: str, kwargs: dict[str, Any] | None = None) -> nn.Module:
    """``MODULE:CALLABLE(**kwargs)``, which must return an ``nn.Module``; one line if the
    module does not import here."""
    import importlib

    module, _, attr = name.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise OodkitError(
            f"the classifier's builder {name} cannot be imported here ({first_line(exc)}): "
            "install or put on PYTHONPATH the code that defines it"
        ) from None
    try:
        net = fn(**(kwargs or {}))
    except Exception as exc:  # noqa: BLE001 - the user's code, any error
        raise OodkitError(f"{name}(**{kwargs or {}}) failed: {first_line(exc)}") from None
    if not isinstance(net, nn.Module):
        raise OodkitError(f"{name} returned a {type(net).__name__}, not an nn.Module")
    return net


def last_linear(net: nn.Module) -> int:
    """Outputs of the last ``nn.Linear`` (a built network's number of classes)."""
    linear = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if not linear:
        raise OodkitError(f"{type(net).__name__} has no nn.Linear classifier layer")
    return int(linear[-1].out_features)


def build_net(
    library: str, name: str, num_classes: int, kwargs: dict[str, Any] | None = None
) -> nn.Module:
    """The architecture with random weights and ``num_classes`` outputs (no download; a
    ``python`` builder decides its classes itself, from ``kwargs``)."""
    if library == "python":
        return python_builder(name, kwargs)
    if library == "torchvision":
        from torchvision.models import get_model, list_models

        if name not in list_models():
            raise OodkitError(f"unknown torchvision model {name!r}")
        if name in TORCHVISION_BUILDER_ARGS or name.startswith(("vit_", "maxvit")):
            raise OodkitError(
                f"torchvision {name} builds differently with its weights (input transform, "
                "image size): not supported by oodkit import yet"
            )
        return get_model(name, weights=None, num_classes=num_classes)
    if library == "timm":
        import timm

        if not timm.is_model(name.split(".")[0]):
            raise OodkitError(f"unknown timm model {name!r}")
        return timm.create_model(name, pretrained=False, num_classes=num_classes)
    if library == "openood":
        from oodkit.models.openood import ARCHITECTURES

        return ARCHITECTURES[name](num_classes)
    import importlib

    entry = _registry_entry(name)
    module, _, cls = entry.arch_class.rpartition(".")
    kwargs = {**entry.arch_kwargs, "num_classes": num_classes}
    return getattr(importlib.import_module(module), cls)(**kwargs)


def find_head(net: nn.Module, num_classes: int) -> str:
    """Name of the classifier layer: timm's ``get_classifier()``, else the last
    ``nn.Linear`` with ``num_classes`` outputs."""
    modules = dict(net.named_modules())
    get = getattr(net, "get_classifier", None)
    if callable(get):
        head = get()
        for name, m in modules.items():
            if m is head and isinstance(m, nn.Linear):
                return name
    linear = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
    fitting = [n for n in linear if modules[n].out_features == num_classes]
    if not fitting:
        raise OodkitError(
            f"cannot find the classifier layer (an nn.Linear with {num_classes} outputs) "
            f"of {type(net).__name__}"
        )
    return fitting[-1]


class ImportedClassifier(nn.Module):
    """An imported network as a detector: ``{"features", "logits"}`` per batch."""

    def __init__(self, config: Any, net: nn.Module) -> None:
        super().__init__()
        self.config = config
        self.net = net
        self.feature_dim = net.get_submodule(config.source["head"]).in_features

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        taken: list[tuple[torch.Tensor, torch.Tensor]] = []
        head = self.classifier_layer()
        hook = head.register_forward_hook(lambda _m, args, out: taken.append((args[0], out)))
        try:
            logits = self.net(x)
        finally:
            hook.remove()
        if not taken or logits is not taken[-1][1]:
            raise OodkitError(
                f"{self.config.arch}: its output is not its classifier layer "
                f"{self.config.source['head']!r}'s"
            )
        return {"features": taken[-1][0].flatten(1), "logits": logits}

    def classifier_layer(self) -> nn.Linear:
        """The layer that maps ``features`` to ``logits`` (``Detector.classifier_layer``)."""
        return self.net.get_submodule(self.config.source["head"])

    def feature_map(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(last feature map A [B, C, h, w], logits) for Grad-CAM: A is the input of the
        network's global pool, made a leaf that requires grad (∂logits/∂A runs through the
        pool and head only)."""
        pool = self._pool()
        taken: list[torch.Tensor] = []

        def leaf(_m, args):
            a = args[0].detach().requires_grad_(True)
            taken.append(a)
            return (a, *args[1:])

        hook = pool.register_forward_pre_hook(leaf)
        try:
            logits = self.net(x)
        finally:
            hook.remove()
        return taken[-1], logits

    def _pool(self) -> nn.Module:
        for name in ("avgpool", "global_pool", "head.global_pool"):  # torchvision, timm
            try:
                module = self.net.get_submodule(name)
            except AttributeError:
                continue
            return module
        raise OodkitError(
            f"{self.config.arch} has no global pool (avgpool / global_pool) to take a Grad-CAM "
            "feature map from; pass --no-cam"
        )

    @classmethod
    def build(cls, config: Any) -> ImportedClassifier:
        s = config.source
        net = build_net(s["library"], s["name"], config.num_classes, s.get("kwargs"))
        return cls(config, net)


# --- weights ------------------------------------------------------------------------------


def load_strict(net: nn.Module, state: dict[str, torch.Tensor], origin: str, arch: str) -> None:
    """Every tensor of the architecture from ``state``, same shapes, nothing left over."""
    own = net.state_dict()
    state = dict(state)
    for k in own:  # BatchNorm counters that older checkpoints lack (torch fills them too)
        if k.endswith("num_batches_tracked") and k not in state:
            state[k] = own[k]
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
    for keys, what in ((missing, "lacks"), (extra, "has unknown"), (wrong, "has wrong shapes of")):
        if keys:
            raise OodkitError(
                f"{origin} does not fit {arch}: it {what} {len(keys)} tensors, e.g. {keys[0]}"
            )
    net.load_state_dict(state, strict=True)


def _hub_file(file_name: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / file_name


def _cached(path: Path, what: str, url: str, sha_prefix: str | None) -> Path:
    """A file of the torch hub cache, present and with the expected hash (prefix)."""
    if not path.is_file():
        raise OodkitError(
            f"{what} are not downloaded and oodkit does not download them: save {url} "
            f"as {path}, or pass --weights FILE"
        )
    if sha_prefix and not file_digest(path).startswith(sha_prefix):
        raise OodkitError(f"{path} does not have the SHA-256 of {what} ({sha_prefix}...)")
    return path


def torchvision_weights(name: str, member: str):
    """The torchvision weights enum member ``member`` of model ``name``."""
    from torchvision.models import get_model_weights

    enum = get_model_weights(name)
    try:
        return enum[member]
    except KeyError:
        names = ", ".join(m.name for m in enum)
        raise OodkitError(
            f"{name} has no torchvision weights {member!r} (one of {names})"
        ) from None


def _file_input(path: Path, what: str) -> dict[str, Any]:
    return file_input(path, "weights", what=what)


# --- classes and preprocessing -------------------------------------------------------------


def classes_of(dataset: str) -> tuple[list[str] | None, list[str] | None]:
    """(class names, WordNet ids) of a training set in label order, where oodkit ships them."""
    from oodkit.data import classes as C

    if dataset == "cifar10":
        return C.cifar10_classes(), None
    if dataset in ("imagenet", "imagenet1k"):  # pytorch-ood's registry says imagenet1k
        return [n for _, n in C.imagenet1k()], [w for w, _ in C.imagenet1k()]
    if dataset == "imagenet200":
        return C.imagenet200_classes(), C.imagenet200_wnids()
    return None, None


def _torchvision_preprocessing(weights) -> Preprocessing:
    t = weights.transforms()
    return Preprocessing(
        resize=int(t.resize_size[0]),
        crop=int(t.crop_size[0]),
        mean=[float(v) for v in t.mean],
        std=[float(v) for v in t.std],
        interpolation=t.interpolation.value,
    )


def _timm_preprocessing(net: nn.Module) -> Preprocessing:
    from timm.data import resolve_data_config

    cfg = resolve_data_config({}, model=net)
    crop = int(cfg["input_size"][-1])
    mode = cfg.get("crop_mode", "center")
    if mode not in ("center", "squash"):
        raise OodkitError(f"timm crop mode {mode!r} is not supported (center, squash)")
    return Preprocessing(
        resize=math.floor(crop / cfg["crop_pct"]),  # timm's eval scale size
        crop=crop,
        mean=[float(v) for v in cfg["mean"]],
        std=[float(v) for v in cfg["std"]],
        interpolation=cfg["interpolation"] if cfg["interpolation"] in INTERPOLATIONS else "bicubic",
        square=mode == "squash",
    )


def _timm_classes(net: nn.Module) -> tuple[list[str] | None, list[str] | None]:
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset = infer_imagenet_subset(net)
    if not subset:
        return None, None
    info = ImageNetInfo(subset)
    ids = list(info.label_names())
    return [info.index_to_description(i) for i in range(len(ids))], ids


def _registry_preprocessing(entry) -> Preprocessing | None:
    p = entry.preprocessing
    if p is None or not hasattr(p, "size"):
        return None
    return Preprocessing(
        resize=int(p.size[0]),
        crop=int((p.crop_size or p.size)[0]),
        mean=[float(v) for v in p.mean],
        std=[float(v) for v in p.std],
        square=True,  # torchvision Resize((h, w)): both sides
    )


def class_map(config: Any, classes: list[str] | None, ids: list[str] | None) -> list[int] | None:
    """For an imported classifier scored on data with other classes: the logit column of each
    data class (matched by WordNet id), as OpenOOD scores ImageNet-200 with a 1000-class
    model; ``None`` when the classes are the classifier's own (or the data's are unknown)."""
    if config.source is None or classes is None:
        return None
    own = config.class_ids
    if own is not None and ids is not None:
        if own == ids:
            return None
        from oodkit.data.classes import map_by_id

        return map_by_id(own, ids, "the classifier", "the data's")
    if config.num_classes != len(classes):
        raise OodkitError(
            f"the classifier has {config.num_classes} classes and the data {len(classes)}, and "
            "no WordNet ids map one to the other (import it with --trained-on)"
        )
    return None


# --- import ------------------------------------------------------------------------------


def _num_classes_in(state: dict[str, torch.Tensor], head: str, path: Path) -> int:
    """Outputs of the classifier layer ``head`` in a state dict."""
    weight = state.get(f"{head}.weight")
    if weight is None or weight.ndim != 2:
        raise OodkitError(f"{path} has no classifier layer {head!r} (tensor {head}.weight)")
    return int(weight.shape[0])


def state_input(state: dict[str, torch.Tensor], path: str) -> dict[str, Any]:
    """A manifest input for weights held in memory: SHA-256 over names and values."""
    digest = hashlib.sha256()
    for k in sorted(state):
        digest.update(k.encode() + state[k].detach().cpu().contiguous().numpy().tobytes())
    return {"kind": "weights", "path": path, "fingerprint": digest.hexdigest()}


def import_module(net: nn.Module, builder: str, kwargs: dict[str, Any] | None) -> Imported:
    """A module built in Python: ``builder(**kwargs)`` must rebuild its architecture (every
    tensor of ``net`` loads strictly into the rebuilt one, which is what the artifact keeps)."""
    rebuilt = python_builder(builder, kwargs)
    state = net.state_dict()
    load_strict(rebuilt, state, f"the given {type(net).__name__}", f"python:{builder}")
    k = last_linear(rebuilt)
    return Imported(
        net=rebuilt.eval(),
        arch={
            "library": "python",
            "name": builder,
            "head": find_head(rebuilt, k),
            "kwargs": kwargs or {},
        },
        preprocessing=None,
        class_names=None,
        class_ids=None,
        weights=state_input(state, f"python:{builder}"),
    )


def import_classifier(
    source: Source, weights_file: str | Path | None, kwargs: dict[str, Any] | None = None
) -> Imported:
    """Build ``source`` and load its weights: from ``weights_file`` (any library) or, without
    one, the named weights from the library's cache (torchvision, timm, pytorch-ood).
    ``kwargs``: a ``python`` builder's keyword arguments."""
    from oodkit.models.backbone import read_state_dict

    lib, name = source.library, source.name
    if kwargs and lib != "python":
        raise OodkitError("--builder-kwargs is for python:MODULE:CALLABLE sources")
    if lib == "python":
        if weights_file is None:
            raise OodkitError(f"{source}: pass --weights FILE (its state dict)")
        path = Path(weights_file)
        state = read_state_dict(path)
        net = python_builder(name, kwargs)
        head = find_head(net, last_linear(net))
        load_strict(net, state, str(path), str(source))
        return Imported(
            net=net.eval(),
            arch={"library": lib, "name": name, "head": head, "kwargs": kwargs or {}},
            preprocessing=None,
            class_names=None,
            class_ids=None,
            weights=_file_input(path, "weights file"),
        )
    entry = _registry_entry(name) if lib == "pytorch-ood" else None
    if entry is not None:
        name = entry.key  # a key given without its seed resolves to one entry
    if weights_file is not None and source.weights:
        raise OodkitError(f"{source} names its weights: drop --weights, or the :{source.weights}")
    if weights_file is None and lib == "openood":
        raise OodkitError(f"{source}: pass --weights FILE (an OpenOOD checkpoint)")
    if weights_file is None and lib == "torchvision" and not source.weights:
        raise OodkitError(f"{source}: name its weights ({source}:IMAGENET1K_V1) or pass --weights")

    prep: Preprocessing | None = None
    probe: nn.Module | None = None  # the architecture built to read a weights file's classes
    probe_classes = 0
    names: list[str] | None = None
    ids: list[str] | None = None
    if weights_file is not None:
        path = Path(weights_file)
        state = read_state_dict(path)
        probe_classes = 1000 if entry is None else int(entry.arch_kwargs["num_classes"])
        probe = build_net(lib, name, probe_classes)
        num_classes = _num_classes_in(state, find_head(probe, probe_classes), path)
        provenance = _file_input(path, "weights file")
    elif lib == "torchvision":
        member = torchvision_weights(name, source.weights)
        url = member.url
        file_name = os.path.basename(url)
        stem = Path(file_name).stem
        sha = stem.rsplit("-", 1)[-1] if "-" in stem else None
        path = _cached(_hub_file(file_name), f"torchvision weights {member}", url, sha)
        state = read_state_dict(path)
        names = list(member.meta["categories"])
        num_classes = len(names)
        if num_classes == 1000 and source.weights.startswith("IMAGENET1K"):
            names, ids = classes_of("imagenet")
        prep = _torchvision_preprocessing(member)
        provenance = _file_input(path, f"torchvision {member}")
    elif lib == "pytorch-ood":
        path = _cached(_hub_file(entry.file_name), f"pytorch-ood weights {name}", entry.url, None)
        if file_digest(path) != entry.sha256:
            raise OodkitError(f"{path} does not have the SHA-256 of pytorch-ood {name}")
        state = read_state_dict(path)
        if entry.state_dict_transform is not None:
            state = entry.state_dict_transform(state)
        num_classes = int(entry.arch_kwargs["num_classes"])
        provenance = _file_input(path, f"pytorch-ood {name}")
    else:  # timm pretrained weights from the Hugging Face cache
        import timm

        try:
            net = timm.create_model(name, pretrained=True)
        except Exception as exc:  # noqa: BLE001 - hub, network and file errors alike
            raise OodkitError(
                f"timm weights {name} are not in the Hugging Face cache and oodkit does not "
                f"download them ({type(exc).__name__}); fetch them once online, or pass "
                "--weights FILE"
            ) from None
        state = net.state_dict()
        num_classes = int(net.num_classes)
        provenance = state_input(state, f"timm:{name}")

    fits = probe is not None and num_classes == probe_classes  # the probe's head already fits
    net = probe if fits else build_net(lib, name, num_classes)
    head = find_head(net, num_classes)
    load_strict(net, state, str(provenance["path"]), f"{source}")
    if entry is not None:  # what the registry says, whichever file the weights came from
        prep = _registry_preprocessing(entry)
        names, ids = classes_of(entry.dataset) if entry.dataset else (None, None)
    if lib == "timm":
        prep = _timm_preprocessing(net)
        names, ids = _timm_classes(net)
        if ids is not None and len(ids) != num_classes:
            names, ids = None, None
    return Imported(
        net=net.eval(),
        arch={"library": lib, "name": name, "head": head},
        preprocessing=prep,
        class_names=names,
        class_ids=ids,
        weights=provenance,
    )
