"""Evaluation: metric functions against hand-computed values, and the evaluate stage end to end."""

from __future__ import annotations

import base64
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import fast_params, make_world

from gandistill.evaluation import cost, privacy
from gandistill.evaluation import metrics as M
from gandistill.evaluation.gan_quality import frechet_distance, inception_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import chromium  # noqa: E402  (scripts/chromium.py: headless Chromium over the DevTools pipe)


def probs_to_logits(probs: list[list[float]]) -> torch.Tensor:
    return torch.tensor(probs, dtype=torch.float64).log()


# -- metric functions -----------------------------------------------------------------------

def test_ece_matches_hand_computation():
    # two samples at confidence 0.9 (one right, one wrong), two at 0.7 (both right):
    # ECE = 2/4·|0.5 − 0.9| + 2/4·|1.0 − 0.7| = 0.2 + 0.15 = 0.35
    logits = probs_to_logits([[0.9, 0.1], [0.9, 0.1], [0.3, 0.7], [0.3, 0.7]])
    labels = torch.tensor([0, 1, 1, 1])
    cal = M.calibration(logits, labels, bins=15)
    assert cal.ece == pytest.approx(0.35, abs=1e-9)
    assert cal.counts.sum() == 4 and (cal.counts > 0).sum() == 2
    filled = cal.counts > 0
    assert sorted(cal.accuracy[filled].tolist()) == pytest.approx([0.5, 1.0])
    assert sorted(cal.confidence[filled].tolist()) == pytest.approx([0.7, 0.9])


def test_ece_is_zero_for_a_perfectly_calibrated_bin():
    # 10 samples at confidence 0.8, 8 of them right
    logits = probs_to_logits([[0.8, 0.2]] * 10)
    labels = torch.tensor([0] * 8 + [1] * 2)
    assert M.calibration(logits, labels).ece == pytest.approx(0.0, abs=1e-9)


def test_confusion_matrix_rows_are_truth_and_per_class_accuracy():
    labels = np.array([0, 0, 1, 1, 1, 2])
    preds = np.array([0, 1, 1, 1, 2, 2])
    cm = M.confusion_matrix(labels, preds, 4)
    assert cm.tolist() == [[1, 1, 0, 0], [0, 2, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    acc = M.per_class_accuracy(cm)
    assert acc[:3].tolist() == pytest.approx([0.5, 2 / 3, 1.0])
    assert math.isnan(acc[3])  # class absent from the split: undefined, not 0


def test_agreement_and_kl():
    a = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 3.0]])
    assert M.agreement(a, b) == 0.75
    assert M.mean_kl(a, a) == pytest.approx(0.0, abs=1e-12)
    # one sample: p = (0.5, 0.5), q = (0.9, 0.1): KL = 0.5 ln(0.5/0.9) + 0.5 ln(0.5/0.1)
    kl = M.mean_kl(probs_to_logits([[0.5, 0.5]]), probs_to_logits([[0.9, 0.1]]))
    assert kl == pytest.approx(0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(5.0), rel=1e-9)


def test_wilson_interval_and_mcnemar():
    lo, hi = M.wilson_interval(95, 100)
    assert (lo, hi) == pytest.approx((0.8883, 0.9785), abs=1e-4)  # textbook value for 95/100
    # 5 discordant pairs, all in one direction: p = 2·0.5^5
    a = np.array([True] * 5 + [True] * 10)
    b = np.array([False] * 5 + [True] * 10)
    assert M.mcnemar_p(a, b) == pytest.approx(2 * 0.5**5)
    assert M.mcnemar_p(a, a) == 1.0
    # n01 = 3, n10 = 10: p = 2·(C(13,0) + C(13,1) + C(13,2) + C(13,3)) / 2^13 = 2·378/8192
    a = np.array([False] * 3 + [True] * 10 + [True] * 5)
    b = np.array([True] * 3 + [False] * 10 + [True] * 5)
    assert M.mcnemar_p(a, b) == pytest.approx(2 * 378 / 8192, rel=1e-9)
    assert M.mcnemar_p(b, a) == pytest.approx(2 * 378 / 8192, rel=1e-9)
    # Wilson by its formula, z = 1.959964: 0/20 → (0, z²/(n + z²)); 20/20 mirrors it
    z2 = 1.959964**2
    assert M.wilson_interval(0, 20) == pytest.approx((0.0, z2 / (20 + z2)), abs=1e-6)
    assert M.wilson_interval(20, 20) == pytest.approx((20 / (20 + z2), 1.0), abs=1e-6)


def test_plots_leave_the_process_matplotlib_backend_alone(tmp_path):
    """A library must not switch the backend of the process that imports it: draw a figure
    after the host chose its own backend, and the backend is still the host's."""
    script = ("import matplotlib; matplotlib.use('svg'); import numpy as np\n"
              "from gandistill.evaluation import plots\n"
              f"plots.per_class_bars({{'m': np.array([0.5, 1.0])}}, ['a', 'b'], r'{tmp_path / 'bars.png'}')\n"
              "print(matplotlib.get_backend())")
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "svg"
    assert (tmp_path / "bars.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fid_sanity():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 4))
    y = rng.normal(size=(4000, 4))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(x, y) < 0.05  # same distribution: only sampling noise
    # shifted mean by 3 in every dimension: ‖Δμ‖² = 4·9 = 36, covariances equal
    assert frechet_distance(x, x + 3.0) == pytest.approx(36.0, rel=1e-6)
    # scaled covariance: Tr(I + 4I − 2·2I) = 4·1 = 4 (population values, tolerance for sampling)
    assert frechet_distance(x, 2 * y) == pytest.approx(4.0, rel=0.1)


def test_inception_score_bounds():
    confident_balanced = torch.eye(5)
    assert inception_score(confident_balanced) == pytest.approx(5.0, rel=1e-4)
    assert inception_score(torch.full((10, 5), 0.2)) == pytest.approx(1.0, rel=1e-6)


def test_count_macs_of_a_linear_and_conv():
    assert cost.count_macs(torch.nn.Linear(10, 7), torch.zeros(3, 10)) == 70
    conv = torch.nn.Conv2d(2, 4, 3, padding=1)  # per output pixel 2·3·3 MACs × 4 channels × 5·5 pixels
    assert cost.count_macs(conv, torch.zeros(1, 2, 5, 5)) == 2 * 9 * 4 * 25


def test_nearest_distances_match_brute_force_and_audit_flags_copies():
    g = torch.Generator().manual_seed(0)
    train = torch.rand(300, 1, 6, 6, generator=g)
    queries = torch.rand(40, 1, 6, 6, generator=g)
    d, i = privacy.nearest_distances(queries, train, chunk=64)
    brute = torch.cdist(queries.flatten(1), train.flatten(1))
    assert torch.allclose(d, brute.min(1).values, atol=1e-4)
    assert torch.equal(i, brute.argmin(1))
    heldout = torch.rand(100, 1, 6, 6, generator=g)
    honest = privacy.audit_space(torch.rand(100, 1, 6, 6, generator=g), heldout, train)
    copies = privacy.audit_space(train[:100] + 0.001, heldout, train)
    assert honest.fraction_below < 0.1
    assert copies.fraction_below == 1.0 and copies.nearest_index.tolist() == list(range(100))


# -- the stage ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    from gandistill.stages import evaluate

    root = tmp_path_factory.mktemp("evaluate")
    world = make_world(root)
    result = evaluate.run(fast_params(), world["data"], world["teacher"], world["student"], world["generator"],
                          root / "evaluation", None, baseline_dirs={"scratch": world["teacher"]})
    return root, result


def test_evaluate_stage_reports_every_metric(evaluated):
    root, result = evaluated
    m = result["metrics"]
    for key in ("teacher_test_acc", "student_test_acc", "agreement", "kl_teacher_student", "ece_teacher",
                "ece_student", "params_teacher", "params_student", "compression_ratio", "macs_teacher",
                "macs_student", "size_bytes_student", "gan_inception_score", "gan_fid", "gan_coverage", "gan_recall",
                "gan_precision", "gan_recall_min",
                "gan_conditioning_agreement", "privacy_pixel_frac_below_p1", "privacy_feature_frac_below_p1",
                "baseline_scratch_test_acc", "speedup_latency_onnxruntime"):
        assert key in m and isinstance(m[key], float), key
    for model in ("teacher", "student"):
        for backend in ("eager", "torchscript", "onnxruntime"):
            assert m[f"latency_p50_ms_{model}_{backend}"] <= m[f"latency_p95_ms_{model}_{backend}"]
            assert m[f"throughput_ips_{model}_{backend}"] > 0
    assert m["teacher_test_acc"] > 0.9 and m["student_test_acc"] > 0.9  # the tiny world is learnable
    assert m["compression_ratio"] == pytest.approx(m["params_teacher"] / m["params_student"])
    cm = np.array(result["confusion_matrix"])
    assert cm.shape == (3, 3) and cm.sum() == m["test_samples"]
    assert np.trace(cm) / cm.sum() == pytest.approx(m["student_test_acc"])
    assert result["class_names"] == ["left", "middle", "right"]
    assert json.loads((root / "evaluation" / "result.json").read_text())["metrics"] == pytest.approx(m)
    for name in result["figures"].values():
        assert (root / "evaluation" / name).stat().st_size > 1000


def test_html_report_is_self_contained(evaluated):
    _, result = evaluated
    page = Path(result["report_html"]).read_text()
    assert not re.search(r"(src|href)=[\"']?(https?:)?//", page), "the report must not load anything external"
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) >= 8
    assert all(base64.b64decode(img)[:8] == b"\x89PNG\r\n\x1a\n" for img in images)
    md = Path(result["report_md"]).read_text()
    assert "| student (gan)" in md and "![reliability diagrams](reliability.png)" in md


@pytest.mark.skipif(chromium.find_chromium() is None and os.environ.get("GANDISTILL_REQUIRE_CHROMIUM") != "1",
                    reason=f"needs {chromium.NEEDS}")
def test_report_renders_in_headless_chromium(evaluated):
    """Every section of the report (baselines included) renders with decoded, non-blank figures and
    no script error (scripts/chromium.py; tests/test_explain.py runs it on a real run's report)."""
    _, result = evaluated
    with chromium.Browser() as browser:
        found = chromium.check_page(browser, result["report_html"])
    assert found.problems == []
    titles = {s["title"] for s in found.sections}
    assert {"Summary", "Privacy audit (memorisation)", "Cost and speed", "Explain: disagreement atlas"} <= titles
    assert found.images == len(result["figures"])
