"""k-means pseudo-labels: the confidences are the hand-computed softmax over squared centre
distances, and the memory stays O(N·k + N·d) at N = 50k, k = 100, d = 512."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import torch

from oodkit.stages.pseudo_label.kmeans import kmeans_labels


def test_confidence_is_the_softmax_over_squared_distances() -> None:
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(m, 0.3, (40, 8)) for m in (-2, 0, 2)]).astype(np.float32)
    labels, conf = kmeans_labels(torch.from_numpy(x), 3, seed=1)
    km = KMeans(n_clusters=3, n_init=10, random_state=1).fit(x.astype(np.float64))
    d2 = ((x[:, None, :].astype(np.float64) - km.cluster_centers_[None]) ** 2).sum(-1)
    p = np.exp(-d2) / np.exp(-d2).sum(1, keepdims=True)
    assert (labels == km.labels_).all()
    np.testing.assert_allclose(conf, p.max(1), rtol=1e-9, atol=1e-12)


MEMORY = """
import resource, numpy as np, torch, sklearn.cluster as sc
from oodkit.stages.pseudo_label import kmeans
class Short(sc.KMeans):  # two Lloyd steps: the memory, not the fit, is under test
    def __init__(self, n_clusters, n_init, random_state):
        super().__init__(n_clusters=n_clusters, n_init=1, max_iter=2, random_state=random_state)
sc.KMeans = Short
x = torch.from_numpy(np.random.default_rng(0).standard_normal((50_000, 512), dtype=np.float32))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
labels, conf = kmeans.kmeans_labels(x, 100, seed=0)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(before * 1024, peak * 1024, len(labels), float(conf.min()))
"""


def test_memory_is_bounded_at_imagenet_like_sizes() -> None:
    """The N×k×d tensor of before would be 20 GB here; the run must stay under 1 GiB more
    than its input."""
    proc = subprocess.run(
        [sys.executable, "-c", MEMORY],
        capture_output=True,
        text=True,
        timeout=300,
        env={"OMP_NUM_THREADS": "2", "PATH": ""},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    before, peak, n, low = proc.stdout.split()
    assert int(n) == 50_000 and 0 < float(low) <= 1
    assert int(peak) - int(before) < 1 << 30, f"k-means grew RSS by {int(peak) - int(before)} bytes"
