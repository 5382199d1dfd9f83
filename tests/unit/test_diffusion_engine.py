"""Guidance math vs direct transcriptions; DDIM loop and inversion vs diffusers' schedulers."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler, PNDMScheduler

from oodkit.diffusion import guidance as G
from oodkit.diffusion.sampler import DDIMSampler, ddim_scheduler
from oodkit.seeding import per_sample_randn, sample_generators


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _masks_by_loops(psi: torch.Tensor, lam: float):
    """Independent transcription: sort each (sample, channel) and mark the n extremes."""
    b, c, h, w = psi.shape
    n = math.ceil(lam * h * w)
    ms, mn = torch.zeros_like(psi), torch.zeros_like(psi)
    for i in range(b):
        for j in range(c):
            vals = psi[i, j].abs().flatten()
            order = sorted(range(h * w), key=lambda k: float(vals[k]))
            for k in order[-n:]:
                ms[i, j, k // w, k % w] = 1
            for k in order[:n]:
                mn[i, j, k // w, k % w] = 1
    return ms, mn, n


@pytest.mark.parametrize(("lam", "h", "w"), [(0.1, 8, 8), (0.2, 5, 7), (0.15, 4, 4)])
def test_sona_masks_and_delta_match_transcription(lam: float, h: int, w: int) -> None:
    psi_id, psi_ood = _rand(2, 3, h, w, seed=1), _rand(2, 3, h, w, seed=2)
    ms_id, mn_id, n = _masks_by_loops(psi_id, lam)
    ms_ood, _, _ = _masks_by_loops(psi_ood, lam)
    got_s, got_n = G.sona_masks(psi_id, lam)
    assert torch.equal(got_s, ms_id) and torch.equal(got_n, mn_id)
    assert G.mask_count(lam, h, w) == n
    assert torch.all(got_s.sum(dim=(2, 3)) == n) and torch.all(got_n.sum(dim=(2, 3)) == n)
    want = -ms_id * psi_id + mn_id * psi_id + ms_ood * (1 - mn_id) * psi_ood
    assert torch.allclose(G.sona_delta(psi_id, psi_ood, lam), want)


def test_nuisance_filter_removes_ood_guidance_in_nuisance_regions() -> None:
    psi_id = torch.zeros(1, 1, 2, 2)
    psi_id[0, 0] = torch.tensor([[0.01, 5.0], [3.0, 2.0]])  # nuisance (smallest) = (0, 0)
    psi_ood = torch.zeros(1, 1, 2, 2)
    psi_ood[0, 0] = torch.tensor([[9.0, 0.1], [0.2, 0.3]])  # semantic (largest) = (0, 0)
    delta = G.sona_delta(psi_id, psi_ood, lam=0.25)
    # (0, 0): M_N(ψ_ID) keeps +ψ_ID, and (1 − M_N(ψ_ID)) removes the OOD term there
    assert delta[0, 0, 0, 0] == pytest.approx(0.01)
    assert delta[0, 0, 0, 1] == pytest.approx(-5.0)  # the ID semantic region is pushed away
    assert delta[0, 0, 1, 0] == 0 and delta[0, 0, 1, 1] == 0


def test_cfg_sd_and_global_formulas() -> None:
    c, u = _rand(2, 4, 3, 3, seed=3), _rand(2, 4, 3, 3, seed=4)
    assert torch.allclose(G.cfg_eps(c, u, 7.5), u + 7.5 * (c - u))
    assert torch.allclose(G.sd_eps(c, u, 2.0), 3.0 * c - 2.0 * u)
    assert torch.allclose(G.sd_eps(c, u, 2.0), G.cfg_eps(c, u, 3.0))  # (1 + w) = s
    assert torch.allclose(G.global_eps(c, u, 10.0), u + 10.0 * (c - u))


def test_sona_guidance_momentum_and_warmup() -> None:
    u, e_id, e_ood = _rand(2, 1, 4, 4, seed=5), _rand(2, 1, 4, 4, seed=6), _rand(2, 1, 4, 4, seed=7)
    plain = G.SonaGuidance(scale=10, lam=0.25)
    delta = G.sona_delta(e_id - u, e_ood - u, 0.25)
    assert torch.allclose(plain(u, e_id, e_ood, torch.tensor([0, 3])), u + 10 * delta)
    mom = G.SonaGuidance(scale=10, lam=0.25, momentum_scale=0.3, momentum_beta=0.6, warmup=2)
    mom.reset(u)
    first = mom(u, e_id, e_ood, torch.tensor([0, 2]))
    # sample 0 is in warm-up (unguided); sample 1 is guided; velocity = 0.4 · Δ for both
    assert torch.allclose(first[0], u[0]) and torch.allclose(first[1], u[1] + 10 * delta[1])
    assert torch.allclose(mom.velocity, 0.4 * delta)
    second = mom(u, e_id, e_ood, torch.tensor([1, 3]))
    g = delta + 0.3 * 0.4 * delta
    assert torch.allclose(second[1], u[1] + 10 * g[1])
    assert torch.allclose(mom.velocity, 0.6 * 0.4 * delta + 0.4 * g)


@pytest.mark.parametrize("condition", ["class", "away", "none"])
@pytest.mark.parametrize("method", ["sona", "global"])
def test_ood_conditions_give_the_hand_computed_guidance(method: str, condition: str) -> None:
    """away: ψ_OOD = −ψ_ID, so SONA's Δ = −2·M_S(ψ_ID)⊙ψ_ID + M_N(ψ_ID)⊙ψ_ID (λ ≤ 0.5);
    none: ψ_OOD = 0, Δ = −M_S⊙ψ_ID + M_N⊙ψ_ID; class: the drawn condition's own row."""
    from types import SimpleNamespace

    from oodkit.stages.generate.methods import method_class

    opts = SimpleNamespace(
        scale=4.0, lam=0.25, momentum_scale=0.0, momentum_beta=0.6, warmup=0,
        ood_condition=condition,
    )  # fmt: skip
    m = method_class(method)(opts)
    u, e_id, e_ood = (
        _rand(2, 1, 4, 4, seed=8),
        _rand(2, 1, 4, 4, seed=9),
        _rand(2, 1, 4, 4, seed=10),
    )
    ms, mn, _ = _masks_by_loops(e_id - u, 0.25)
    psi = e_id - u
    if method == "sona":
        rows = {"class": ("id", "ood"), "away": ("id",), "none": ("id",)}[condition]
        e = torch.stack([u, e_id, e_ood] if condition == "class" else [u, e_id])
        ms_ood, _, _ = _masks_by_loops(e_ood - u, 0.25)
        delta = {
            "class": -ms * psi + mn * psi + ms_ood * (1 - mn) * (e_ood - u),
            "away": -2 * ms * psi + mn * psi,
            "none": -ms * psi + mn * psi,
        }[condition]
        want = u + 4.0 * delta
    else:
        rows = {"class": ("ood",), "away": ("id",), "none": ("id",)}[condition]
        e = torch.stack([u, e_ood] if condition == "class" else [u, e_id])
        want = {"class": u + 4 * (e_ood - u), "away": u - 4 * psi, "none": u}[condition]
    assert m.rows == rows and m.uses_ood == (condition == "class")
    got = m.make_guide(u)(u, torch.zeros(2), e, torch.zeros(2, dtype=torch.long), torch.arange(2))
    assert torch.allclose(got, want, atol=1e-6)


def _sd_like_scheduler() -> DDIMScheduler:
    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def test_uniform_start_loop_equals_diffusers_ddim_step() -> None:
    sched = _sd_like_scheduler()
    sampler = DDIMSampler(ddim_scheduler(sched.config), 20)
    x = _rand(3, 2, 4, 4, seed=8)
    eps_of = lambda x, t: torch.sin(x) * 0.5 + t.view(-1, 1, 1, 1) / 1000  # noqa: E731 - x-dependent
    ours = sampler.denoise(
        x, [20, 20, 20], lambda xa, t, rows, k: eps_of(xa, t.double()).to(xa.dtype)
    )
    ref = x.clone()
    sched.set_timesteps(20)
    for t in sched.timesteps:
        ref = sched.step(eps_of(ref, torch.full((3,), float(t))).to(ref.dtype), t, ref).prev_sample
    assert torch.allclose(ours, ref, atol=1e-5)


def test_per_sample_start_steps() -> None:
    sampler = DDIMSampler(ddim_scheduler(_sd_like_scheduler().config), 10)
    x = _rand(3, 1, 2, 2, seed=9)
    calls = []

    def eps(xa, t, rows, k):
        calls.append((rows.tolist(), t.tolist(), k.tolist()))
        return torch.zeros_like(xa)

    sampler.denoise(x, [10, 4, 1], eps)
    assert len(calls) == 10  # one noise-predictor call per step
    assert calls[0][0] == [0] and calls[6][0] == [0, 1] and calls[9][0] == [0, 1, 2]
    assert calls[9][2] == [9, 3, 0]  # each sample counts its own steps
    with pytest.raises(ValueError, match="start step 0"):
        sampler.denoise(x, [0, 1, 1], eps)
    with pytest.raises(ValueError, match="start step 11"):
        sampler.noise(x, [11, 1, 1], x)


def test_mixed_starts_in_any_order_equal_each_sample_run_alone_by_diffusers() -> None:
    """Rows in any start order: each row follows diffusers' DDIM steps from its own start,
    and the noise predictor sees the rows (original indices) that have started."""
    sched = _sd_like_scheduler()
    sampler = DDIMSampler(ddim_scheduler(sched.config), 10)
    starts = [1, 10, 4, 7, 4]
    x = _rand(5, 2, 4, 4, seed=10)
    eps_of = lambda x, t: torch.sin(x) * 0.5 + t.view(-1, 1, 1, 1) / 1000  # noqa: E731
    seen = []

    def eps(xa, t, rows, k):
        step = len(seen)  # the longest start is 10, so call c is grid step c
        assert k.tolist() == [step - (10 - starts[r]) for r in rows.tolist()]
        seen.append(sorted(rows.tolist()))
        return eps_of(xa, t.double()).to(xa.dtype)

    ours = sampler.denoise(x, starts, eps)
    assert seen[0] == [1] and seen[3] == [1, 3] and seen[6] == [1, 2, 3, 4]
    assert seen[9] == [0, 1, 2, 3, 4] and len(seen) == 10
    sched.set_timesteps(10)
    for r, s in enumerate(starts):
        ref = x[r : r + 1].clone()
        for t in sched.timesteps[10 - s :]:
            ref = sched.step(eps_of(ref, torch.full((1,), float(t))), t, ref).prev_sample
        assert torch.allclose(ours[r : r + 1], ref, atol=1e-5), r


def test_pndm_folder_still_runs_ddim() -> None:
    pndm = PNDMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1
    )
    sampler = DDIMSampler(ddim_scheduler(pndm.config), 50)
    assert type(sampler.scheduler).__name__ == "DDIMScheduler"
    assert sampler.timesteps[:2].tolist() == [981, 961] and sampler.timesteps[-1] == 1


def test_inversion_with_stub_predictor_recovers_input_and_matches_diffusers() -> None:
    sched = _sd_like_scheduler()
    sampler = DDIMSampler(ddim_scheduler(sched.config), 25)
    x0 = _rand(2, 4, 8, 8, seed=10)
    stub = _rand(2, 4, 8, 8, seed=11)  # ε that does not depend on x
    eps = lambda xa, t, rows, k: stub[rows]  # noqa: E731
    trajectory = sampler.invert(x0, eps)
    inverse = DDIMInverseScheduler.from_config(sched.config, steps_offset=sched.config.steps_offset)
    inverse.set_timesteps(25)
    ref = x0.clone()
    for t in inverse.timesteps:
        ref = inverse.step(stub, t, ref).prev_sample
    assert torch.allclose(trajectory[-1], ref, atol=1e-5)
    back = sampler.denoise(trajectory[-1], [25, 25], eps)
    assert torch.allclose(back, x0, atol=1e-5)


def test_per_sample_generators_are_independent_of_batching() -> None:
    a = per_sample_randn((2, 3), sample_generators(7, ["x", "y", "z"]), "cpu", torch.float32)
    b = per_sample_randn((2, 3), sample_generators(7, ["z"]), "cpu", torch.float32)
    assert torch.equal(a[2], b[0]) and not torch.equal(a[0], a[1])


def _old_bf16_noise(sampler: DDIMSampler, x0: torch.Tensor, start: int, noise: torch.Tensor):
    """The former bug, transcribed: ᾱ cast to the tensor dtype before the square roots."""
    a = sampler.alpha_at([sampler.num_steps - start]).to(x0.dtype).view(-1, 1, 1, 1)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


@pytest.mark.threads(1)
def test_a_one_step_sample_changes_under_a_bf16_unet(tiny_sd) -> None:
    """T̃ = 1: ᾱ(t=1) ≈ 0.999 rounds to 1.0 in bf16; the float32 state keeps the noise."""
    from oodkit.diffusion.denoisers import load_denoiser

    den = load_denoiser(tiny_sd, "cpu", torch.bfloat16)
    sampler = DDIMSampler(ddim_scheduler(den.scheduler_config), 50)
    x0 = den.encode(torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)))
    noise = _rand(*x0.shape, seed=1)
    assert x0.dtype == torch.float32
    assert torch.equal(_old_bf16_noise(sampler, x0.bfloat16(), 1, noise.bfloat16()), x0.bfloat16())
    xt = sampler.noise(x0, [1, 1], noise)
    a = float(sampler.alpha_at([49]))
    assert torch.allclose(xt, math.sqrt(a) * x0 + math.sqrt(1 - a) * noise, atol=1e-6)
    assert (xt - x0).abs().mean() > 1e-3
    cond = den.condition([[None, None]])
    out = sampler.denoise(xt, [1, 1], lambda x, t, rows, k: den.eps(x, t, cond[:, rows])[0])
    assert out.dtype == torch.float32 and not torch.equal(out, x0) and not torch.equal(out, xt)


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a * b).sum() / ((a + b) > 0).sum())


@pytest.mark.threads(1)
def test_sona_masks_from_half_precision_unets_agree_with_fp32(tiny_sd) -> None:
    """ψ = ε(z, c) − ε(z) from an fp16 / bf16 UNet: M_S and M_N against the fp32 masks."""
    from oodkit.diffusion.denoisers import load_denoiser

    x = _rand(4, 4, 8, 8, seed=2)
    psi = {}
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        den = load_denoiser(tiny_sd, "cpu", dtype)
        e = den.eps(x, torch.full((4,), 500), den.condition([[None] * 4, ["a photo of a cat"] * 4]))
        assert e.dtype == torch.float32  # guidance math in float32 whatever the UNet's dtype
        psi[dtype] = e[1] - e[0]
    ms, mn = G.sona_masks(psi[torch.float32], 0.1)
    iou = {}
    for dtype in (torch.float16, torch.bfloat16):
        ms_h, mn_h = G.sona_masks(psi[dtype], 0.1)
        iou[dtype] = (_iou(ms, ms_h), _iou(mn, mn_h))
    # measured: fp16 (0.98, 0.91), bf16 (0.87, 0.70): fp16 is the CUDA default
    assert min(iou[torch.float16]) > 0.85
    assert min(iou[torch.bfloat16]) > 0.5
    assert iou[torch.float16][1] > iou[torch.bfloat16][1]
