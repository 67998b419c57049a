"""The estimator study: its files and their errors, the summary over seeds, the page, and
the whole command on two seeds of the smoke scenario (run again: the runs are reused)."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from sim.cli import app
from validation.study import (
    FLAT,
    README_BEGIN,
    README_END,
    StudyError,
    load_study,
    load_variants,
    run_study,
    summarise,
    winners,
)
from validation.study.page import adjusted_r2, update_readme

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
runner = CliRunner()


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


VARIANTS = """\
    [[variant]]
    label = "voronoi"
    method = "voronoi"

    [[variant]]
    label = "em"
    method = "em"
    description = "the run's own EM"

    [[variant]]
    label = "em-w30"
    method = "em"
    options = { window_min = 30 }
    """


def study_files(folder: Path, *, variants: str = VARIANTS, replications: int = 2) -> Path:
    """A study of the smoke scenario in `folder`: study, variants and sweep files."""
    write(folder / "variants.toml", variants)
    write(
        folder / "sweep.toml",
        f"""\
        name = "smoke_study"
        base = "{(SCENARIOS / "smoke.toml").as_posix()}"
        replications = {replications}
        seeds = "independent"

        [set]
        output.report = false
        estimators.methods = ["em"]  # the run's own, compared with the study's "em" below
        """,
    )
    return write(
        folder / "study.toml",
        """\
        name = "test"
        variants = "variants.toml"

        [[scenario]]
        name = "smoke"
        title = "Smoke"
        sweep = "sweep.toml"
        """,
    )


# ------------------------------------------------------------------------ the files


def test_variants_file_is_read_in_order(tmp_path: Path) -> None:
    variants = load_variants(write(tmp_path / "v.toml", VARIANTS))
    assert [v.label for v in variants] == ["voronoi", "em", "em-w30"]
    assert variants[2].method == "em" and variants[2].options == {"window_min": 30}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[[variant]]\nlabel = "a"\nmethod = "em"\ncolour = "red"\n', "colour: unknown key"),
        ('[[variant]]\nlabel = "a"\nmethod = "hmm2"\n', "method 'hmm2' is not an estimator"),
        (
            '[[variant]]\nlabel = "a"\nmethod = "em"\noptions = { prior_wieght = 1 }\n',
            "options.prior_wieght: unknown key of [estimators]; allowed keys: window_min",
        ),
        (
            '[[variant]]\nlabel = "a"\nmethod = "em"\noptions = { methods = ["em"] }\n',
            "options.methods: a variant runs one method",
        ),
        (
            '[[variant]]\nlabel = "a"\nmethod = "em"\n[[variant]]\nlabel = "a"\nmethod = "bayes"\n',
            "label is used twice",
        ),
        ('[[variant]]\nlabel = "a b/c"\nmethod = "em"\n', "label: String should match pattern"),
        ('[[variant]]\nmethod = "em"\n', "label: required key is missing"),
        ("variant = []\n", "variant"),
        ('[[variants]]\nlabel = "a"\nmethod = "em"\n', "variants: unknown key"),
        ("[[variant]\n", "not valid TOML"),
    ],
)
def test_bad_variants_file_names_the_file_and_the_key(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "variants.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(StudyError) as info:
        load_variants(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)


def test_unknown_method_lists_the_allowed_ones(tmp_path: Path) -> None:
    path = write(tmp_path / "v.toml", '[[variant]]\nlabel = "a"\nmethod = "hmm2"\n')
    with pytest.raises(StudyError, match="allowed: presence, voronoi, bayes, em"):
        load_variants(path)


def test_missing_variants_file(tmp_path: Path) -> None:
    with pytest.raises(StudyError, match="no such variants file"):
        load_variants(tmp_path / "absent.toml")


def test_study_file_loads_its_sweeps_and_variants(tmp_path: Path) -> None:
    study = load_study(study_files(tmp_path))
    assert list(study.sweeps) == ["smoke"]
    assert len(study.sweeps["smoke"].runs) == 2
    assert [v.label for v in study.variants] == ["voronoi", "em", "em-w30"]


def test_the_shipped_study_loads_with_every_method_prior_and_dedup() -> None:
    study = load_study(SCENARIOS / "study" / "estimators.toml")
    assert set(study.sweeps) == {"ttt", "stage1"}
    assert all(len(sweep.runs) >= 10 for sweep in study.sweeps.values())
    methods = {v.method for v in study.variants}
    assert {"voronoi", "bayes", "em", "hmm"} <= methods
    options = [v.options for v in study.variants]
    assert any(o.get("prior") == "event" for o in options)
    assert any(o.get("dedup") for o in options)


def test_option_value_is_checked_against_each_scenario(tmp_path: Path) -> None:
    bad = (
        VARIANTS + '\n[[variant]]\nlabel = "late"\nmethod = "bayes"\noptions = { mode = "later" }\n'
    )
    path = study_files(tmp_path, variants=bad)
    with pytest.raises(StudyError) as info:
        load_study(path)
    message = str(info.value)
    assert "variant[3] ('late') on scenario 'smoke'" in message
    assert "options.mode" in message and "'later'" in message


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda s: s.replace('sweep = "sweep.toml"', 'sweep = "nope.toml"'), "no file 'nope.toml'"),
        (
            lambda s: s.replace('variants = "variants.toml"', 'variants = "x.toml"'),
            "variants: no file 'x.toml'",
        ),
        (lambda s: s + "colour = 1\n", "colour: unknown key"),
        (lambda s: s + s[s.index("[[scenario]]") :], "scenario[1].name 'smoke' is used twice"),
        (lambda s: s.replace('name = "smoke"', 'name = "../up"'), "name: String should match"),
    ],
)
def test_bad_study_file(tmp_path: Path, change, expected: str) -> None:
    path = study_files(tmp_path)
    path.write_text(change(path.read_text(encoding="utf-8")), encoding="utf-8")
    with pytest.raises(StudyError) as info:
        load_study(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)


def test_bad_sweep_is_named_with_its_scenario(tmp_path: Path) -> None:
    path = study_files(tmp_path)
    (tmp_path / "sweep.toml").write_text('name = "x"\nbase = "absent.toml"\n', encoding="utf-8")
    with pytest.raises(StudyError, match=r"scenario\[0\] \(smoke\): .*no scenario file"):
        load_study(path)


def test_first_replications_keeps_the_first_seeds(tmp_path: Path) -> None:
    from validation.study.running import first_replications

    study = load_study(study_files(tmp_path, replications=3))
    first = first_replications(study, 2)
    assert [r.run_id for r in first.sweeps["smoke"].runs] == ["p000-r000", "p000-r001"]
    assert first.sweeps["smoke"].runs[1].spawn_key == study.sweeps["smoke"].runs[1].spawn_key
    with pytest.raises(StudyError, match="--replications 0: needs at least 1"):
        first_replications(study, 0)


def test_command_exits_2_on_a_bad_variants_file(tmp_path: Path) -> None:
    path = study_files(tmp_path, variants='[[variant]]\nlabel = "a"\nmethod = "hmm2"\n')
    out = runner.invoke(app, ["study", str(path), "--out", str(tmp_path / "out")])
    assert out.exit_code == 2
    assert "method 'hmm2' is not an estimator" in out.output
    assert not (tmp_path / "out" / "smoke").exists()  # refused before any run


def test_readme_without_markers_is_refused_before_any_run(tmp_path: Path) -> None:
    readme = write(tmp_path / "README.md", "# no markers\n")
    with pytest.raises(StudyError, match="needs the study's markers"):
        run_study(study_files(tmp_path), tmp_path / "out", readme=readme, progress=False)
    assert not (tmp_path / "out" / "smoke").exists()


# ------------------------------------------------------------------- over seeds


def metrics_table() -> pd.DataFrame:
    """Five seeds of two variants on one zone system, values chosen by hand."""
    rows = []
    values = {
        ("a", "mape"): [0.10, 0.20, 0.30, 0.40, 0.50],
        ("b", "mape"): [0.60, 0.70, 0.80, 0.90, math.nan],
        ("a", "bias"): [-5.0, -4.0, -3.0, -2.0, -1.0],
        ("b", "bias"): [1.0, 1.5, 2.0, 2.5, 3.0],
        ("a", "coverage"): [0.99, 0.99, 0.99, 0.99, 0.99],
        ("b", "coverage"): [0.90, 0.91, 0.92, 0.93, 0.94],
    }
    for (variant, metric), seeds in values.items():
        for r, value in enumerate(seeds):
            rows.append(
                {"scenario": "s", "run_id": f"r{r}", "variant": variant, "method": variant,
                 "zone_system": "area", "metric": metric, "value": value}
            )  # fmt: skip
    return pd.DataFrame(rows)


def test_summary_is_median_quartiles_and_range_over_seeds() -> None:
    summary = summarise(metrics_table()).set_index(["variant", "metric"])
    a = summary.loc[("a", "mape")]
    assert (a["seeds"], a["median"], a["q25"], a["q75"]) == (5, 0.3, 0.2, 0.4)
    assert (a["min"], a["max"]) == (0.1, 0.5)
    b = summary.loc[("b", "mape")]  # the NaN seed is left out
    assert b["seeds"] == 4
    assert b["median"] == pytest.approx(0.75)
    assert b["q25"] == pytest.approx(0.675) and b["q75"] == pytest.approx(0.825)


def test_summary_refuses_two_values_of_one_run() -> None:
    table = metrics_table()
    with pytest.raises(ValueError, match="run 'r0' has two values of mape"):
        summarise(pd.concat([table, table.iloc[[0]]]))
    with pytest.raises(ValueError, match="missing column"):
        summarise(table.drop(columns=["run_id"]))


def test_winners_follow_each_metrics_direction() -> None:
    found = {w.metric: w for w in winners(summarise(metrics_table()), nominal=0.95)}
    assert found["mape"].best == "a" and found["mape"].separated  # 0.2-0.4 vs 0.675-0.825
    assert found["bias"].best == "b"  # +2 is closer to 0 than -3
    assert not found["bias"].separated  # |bias| ranges [1.5, 2.5] and [2, 4] overlap
    assert found["coverage"].best == "b"  # 0.92 is closer to 0.95 than 0.99
    highest = {w.metric: w for w in winners(summarise(metrics_table()))}
    assert highest["coverage"].best == "a"  # without a stated level: the highest


def test_a_tie_is_said() -> None:
    table = metrics_table()
    table = table[table["metric"] == "mape"]
    twin = table[table["variant"] == "a"].assign(variant="c", method="c")
    (w,) = winners(summarise(pd.concat([table, twin])))
    assert w.best == "a" and w.tied == ("c",) and not w.separated


def test_adjusted_r2_known_answers() -> None:
    x = np.arange(10.0)
    assert adjusted_r2(2 * x + 1, x) == (pytest.approx(1.0), 10)
    r2, n = adjusted_r2(np.array([1.0, 2.0]), np.array([1.0, 2.0]))
    assert math.isnan(r2) and n == 2
    noisy = adjusted_r2(np.array([1.0, 3.0, 2.0, 5.0, 4.0]), np.arange(5.0))[0]
    r = np.corrcoef(np.arange(5.0), [1.0, 3.0, 2.0, 5.0, 4.0])[0, 1]
    assert noisy == pytest.approx(1 - (1 - r * r) * 4 / 3)


def test_readme_block_is_replaced_between_its_markers(tmp_path: Path) -> None:
    readme = write(tmp_path / "README.md", f"top\n{README_BEGIN}\nold\n{README_END}\nbottom\n")
    block = f"{README_BEGIN}\nnew table\n{README_END}"
    update_readme(readme, block)
    update_readme(readme, block)  # the same again: idempotent
    assert readme.read_text(encoding="utf-8") == f"top\n{block}\nbottom\n"
    write(readme, f"{README_END}\n{README_BEGIN}\n")
    with pytest.raises(StudyError, match="in this order"):
        update_readme(readme, block)


# ------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def study_run(tmp_path_factory: pytest.TempPathFactory, _private_cache: None):
    """Two seeds of the smoke scenario, three variants; the page and README written."""
    folder = tmp_path_factory.mktemp("study")
    readme = write(folder / "README.md", f"# crowdsim\n\n{README_BEGIN}\n{README_END}\n\nend\n")
    result = run_study(
        study_files(folder), folder / "out", docs=folder / "docs", readme=readme, progress=False
    )
    return folder, result


def test_every_variant_is_scored_on_every_run_and_system(study_run) -> None:
    _, result = study_run
    assert result.ran["smoke"] == ["p000-r000", "p000-r001"]
    table = result.metrics
    for variant in ("voronoi", "em", "em-w30"):
        for system in ("grid", "segment", "area"):
            rows = table[(table["variant"] == variant) & (table["zone_system"] == system)]
            assert set(rows["run_id"]) == {"p000-r000", "p000-r001"}, (variant, system)
    flat = table[(table["variant"] == FLAT) & (table["metric"] == "kwd_mean_m")]
    assert len(flat) == 2 and (flat["value"] > 0).all()
    summary = result.summary
    assert set(summary.loc[summary["variant"] == "em", "seeds"]) <= {1, 2}


def test_a_variant_like_the_run_gives_the_runs_own_scores(study_run) -> None:
    """Estimating again from the operator files reproduces the run's estimators stage."""
    folder, result = study_run
    for run_id in ("p000-r000", "p000-r001"):
        own = pd.read_parquet(folder / "out" / "smoke" / "runs" / run_id / "metrics.parquet")
        own = own[own["method"] == "em"].set_index(["zone_system", "metric"])["value"]
        mine = result.metrics[(result.metrics["run_id"] == run_id)]
        mine = mine[mine["variant"] == "em"].set_index(["zone_system", "metric"])["value"]
        pd.testing.assert_series_equal(mine.sort_index(), own.sort_index(), check_names=False)
        other = result.metrics[(result.metrics["run_id"] == run_id)]
        other = other[other["variant"] == "em-w30"].set_index(["zone_system", "metric"])
        assert not np.allclose(other["value"].loc["grid", "mae"], own.loc["grid", "mae"])


def test_the_page_and_the_readme_are_written_from_the_numbers(study_run) -> None:
    folder, result = study_run
    page = (folder / "docs" / "estimators.md").read_text(encoding="utf-8")
    for figure in ("estimators_smoke_metrics.png", "estimators_smoke_segments.png"):
        assert (folder / "docs" / "figures" / figure).stat().st_size > 10_000
        assert f"(figures/{figure})" in page
    assert "Ricciato & Coluccia" in page and "0.94" in page
    best = winners(result.summary, nominal=0.95, exclude=(FLAT,))
    mape_area = next(w for w in best if w.zone_system == "area" and w.metric == "mape")
    assert f"MAPE: **{mape_area.best}**" in page
    readme = (folder / "README.md").read_text(encoding="utf-8")
    assert readme.startswith("# crowdsim\n\n" + README_BEGIN) and readme.endswith(
        README_END + "\n\nend\n"
    )
    assert "| Smoke | em-w30 | 2 |" in readme


def test_a_second_call_reuses_the_runs_and_scores(study_run) -> None:
    folder, first = study_run
    again = run_study(folder / "study.toml", folder / "out", progress=False)
    assert again.ran["smoke"] == [] and sorted(again.reused["smoke"]) == ["p000-r000", "p000-r001"]
    assert all(r == ["voronoi", "em", "em-w30"] for r in again.runs["scores_reused"])
    pd.testing.assert_frame_equal(again.summary, first.summary)
    # a changed variant is scored again, the others are kept
    write(folder / "variants.toml", VARIANTS.replace("window_min = 30", "window_min = 20"))
    changed = run_study(folder / "study.toml", folder / "out", progress=False)
    assert all(r == ["voronoi", "em"] for r in changed.runs["scores_reused"])
