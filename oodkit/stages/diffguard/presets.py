"""DiffGuard's official recipes as ``--preset`` values.

Read from the official code (``cure-lab/DiffGuard`` at ``6125295``): ``gdm`` is the ImageNet
GDM result (``testOOD/exp/exp6.1.yaml`` over ``conf/diffusion/guided-diffusion-psnr-dists``,
``conf/config.yaml``, ``conf/runner/ood_tester.yaml``, ``guided_diffusion_model.py``), ``ldm``
the LDM one (``testOOD/exp/ldm-exp2.25.yaml`` over ``conf/diffusion/latent-diffusion-model``,
``latent_diffusion_model.py``, ``ldm/models/diffusion/ddim.py``). A preset names only options
whose default is ``None`` ("not given"), so an option given explicitly always wins; the
official values that equal oodkit's defaults (scales, cut-outs, CAM cut, AES cap) need no
entry. ``tests/unit/test_diffguard_official.py`` checks the resolved recipe of each preset
against a table transcribed from those files.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from oodkit.errors import OodkitError

PRESETS: dict[str, dict[str, Any]] = {
    "gdm": {
        "guidance": "classifier",  # cond_fn with the ResNet-50
        "steps": 100,  # timestep_respacing ddim100
        "stop": "aes",  # early_stop_metric [psnr, dists]
        "aes_dists": 0.38,  # exp6.1's early_stop_thresh [48.5, 0.38]
        "aes_clamp": False,  # get_metrics on x_t·0.5 + 0.5, unclamped
        "inversion_eps": "source",  # ddim_reverse_sample: ε = model(x, t) at the source
        "clip_x0": True,  # clip_denoised: True (inversion for t > 0, both chains)
        "restart": "official",  # forback_skip_diff: 3
        "reference": "unguided",  # runner.uncond_aux: True
        "distance": "dists",  # runner.distances [dists]
        "geometry": "classifier",  # input_size 224, process_method resize to 256
    },
    "ldm": {
        "guidance": "cfg",  # unconditional_guidance_scale with the null class 1000
        "steps": 25,  # ddim_steps: 25
        "stop": "1",  # the whole grid, unconditional (null class) inversion
        "inversion_eps": "target",  # DDIMForward: e_t = model(x, t_next)
        "clip_x0": False,  # no clipping in latent space
        "restart": "exact",  # denoising runs the same 25-step grid back
        "reference": "input",  # uncond_aux: False → compared with the input
        "distance": "dists",
        "geometry": "model",  # input_size 256: the classifier sees the 256-px crop
        "dtype": "fp32",  # LDMWrapper never halves the model (GDM: use_fp16, = auto on CUDA)
    },
}


def apply_preset(o: Any) -> Any:
    """``o`` with every DiffGuard option it left unset taken from its preset, then from the
    method's registered defaults (``steps`` and ``stop`` stay unset without a preset: they
    follow the guidance)."""
    from oodkit.methods import SCORE

    if o.preset is not None and o.preset not in PRESETS:
        raise OodkitError(f"--preset must be one of {', '.join(PRESETS)}, got {o.preset!r}")
    chosen = PRESETS.get(o.preset, {})
    method = SCORE.get("diffguard")
    values = {}
    for name in method.options:
        if getattr(o, name) is None:
            values[name] = chosen.get(name, method.defaults.get(name))
    return dataclasses.replace(o, **values)
