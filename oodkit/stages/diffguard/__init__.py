"""``oodkit score --method diffguard``: DiffGuard (Gao et al., ICCV 2023) on the sharded-run
engine; the ``score`` command reaches ``run.score_diffguard`` through the method registry."""
