"""The data map page (OUT/datamap.html) in a real browser: Debian's chromium,
headless, driven by Playwright over the DevTools protocol (the system browser;
nothing downloads a browser build). A real job on real reviews makes the page;
the tests hover, filter, select, export and review as a user would, and check
every answer against metrics.parquet and suspects.csv."""
import csv
import os
import subprocess

import polars as pl
import pytest

from conftest import ROOT


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    out = tmp_path_factory.mktemp("job") / "out"
    carto = os.environ["CARTO_BIN"]
    subprocess.run([carto, "run", "--data", str(ROOT / "examples/rotten_tomatoes/reviews-2k.csv"), "--label-col", "label",
                    "--text-col", "text", "--id-col", "id", "--epochs", "4", "--out", str(out), "-q"], check=True)
    return out


def open_map(browser, path):
    page = browser.new_page(viewport={"width": 1300, "height": 820})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri())
    page.wait_for_selector("body[data-ready=true]", timeout=60000)
    return page, errors


def test_the_page_draws_every_sample_and_hover_shows_its_review(job, browser):
    m = pl.read_parquet(job / "metrics.parquet")
    data = pl.read_csv(ROOT / "examples/rotten_tomatoes/reviews-2k.csv")
    page, errors = open_map(browser, job / "datamap.html")
    assert page.evaluate("window.cartoMap.n") == m.height
    assert page.evaluate("window.cartoMap.scatterplot.get('points').length") == m.height
    # The rightmost point (largest variability) stands alone: hover it.
    i = int(m["variability"].arg_max())
    x, y = page.evaluate(f"window.cartoMap.screenOf({i})")
    page.mouse.move(x, y)
    page.wait_for_function(f"window.cartoMap.hovered === {i}", timeout=5000)
    tip = page.inner_text("#tooltip")
    assert data["text"][i][:60] in tip
    assert f"{m['confidence'][i]:.3f}" in tip and data["label"][i] in tip
    assert not errors, errors


def test_a_box_selection_exports_the_samples_inside_it(job, browser):
    m = pl.read_parquet(job / "metrics.parquet")
    page, errors = open_map(browser, job / "datamap.html")
    # The hard-to-learn corner: low confidence, low variability.
    v0, v1, c0, c1 = 0.0, float(m["variability"].quantile(0.5)), 0.0, float(m["confidence"].quantile(0.2))
    x0, y0 = page.evaluate(f"window.cartoMap.screenOfData({v0}, {c1})")
    x1, y1 = page.evaluate(f"window.cartoMap.screenOfData({v1}, {c0})")
    page.keyboard.down("Alt")
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x1, y1, steps=5)
    page.mouse.up()
    page.keyboard.up("Alt")
    page.wait_for_function("window.cartoMap.selected.length > 0", timeout=5000)
    page.click("#export")
    rows = page.evaluate("window.cartoLastExport.rows")
    assert rows[0] == ["sample_id", "id", "label", "confidence", "variability", "correctness", "aum",
                       "forgetting_events", "text"]
    got = {int(r[0]) for r in rows[1:]}
    inside = m.filter((pl.col("variability") <= v1) & (pl.col("confidence") <= c1))
    want = set(inside["sample_id"].to_list())
    # Float32 drawing vs float64 metrics: points on the box's edge may go either way.
    # A few pixels: 5e-4 of variability, 3e-3 of confidence.
    edge = m.filter(((pl.col("variability") - v1).abs() < 5e-4) | ((pl.col("confidence") - c1).abs() < 3e-3))
    assert want - got <= set(edge["sample_id"].to_list()) and got - want <= set(edge["sample_id"].to_list())
    assert len(want) > 10
    assert page.inner_text("#count") == f"{len(got):,} selected"
    assert not errors, errors


def test_filters_by_label_region_and_text(job, browser):
    m = pl.read_parquet(job / "metrics.parquet")
    data = pl.read_csv(ROOT / "examples/rotten_tomatoes/reviews-2k.csv")
    page, _ = open_map(browser, job / "datamap.html")
    page.uncheck("#labels input[data-label='0']")
    rotten = int((m["label"] == 1).sum())
    assert page.inner_text("#shown").startswith(f"{rotten:,} of")
    page.check("#labels input[data-label='0']")
    page.fill("#search", "documentary")
    want = int(data["text"].str.to_lowercase().str.contains("documentary").sum())
    assert page.inner_text("#shown").startswith(f"{want:,} of")


def test_a_review_exports_relabels_csv_that_carto_relabel_applies(job, browser, tmp_path):
    suspects = pl.read_csv(job / "suspects.csv")
    page, errors = open_map(browser, job / "datamap.html")
    page.click("#review-open")
    page.click("#keep")
    page.select_option("#newlabel", "1")
    page.click("#relabel")
    page.click("#drop")
    assert page.inner_text("#progress").startswith("suspect 4 of")
    page.click("#export-relabels")
    rows = page.evaluate("window.cartoLastExport.rows")
    assert rows[0] == ["sample_id", "id", "action", "new_label"]
    first = suspects["sample_id"].to_list()[:3]
    assert [int(r[0]) for r in rows[1:]] == first
    assert [r[2] for r in rows[1:]] == ["keep", "relabel", "drop"]
    assert rows[2][3] == "rotten" and rows[1][3] == "" and rows[3][3] == ""
    path = tmp_path / "relabels.csv"
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    clean = tmp_path / "clean.parquet"
    subprocess.run([os.environ["CARTO_BIN"], "relabel", "--data", str(ROOT / "examples/rotten_tomatoes/reviews-2k.csv"),
                    "--relabels", str(path), "--out", str(clean)], check=True)
    out = pl.read_parquet(clean)
    assert out.height == pl.read_csv(ROOT / "examples/rotten_tomatoes/reviews-2k.csv").height - 1, "one row dropped"
    assert int(out["carto_relabelled"].sum()) == 1
    assert not errors, errors


def test_a_sampled_page_draws_suspects_and_a_sample_over_the_density_of_all(job, browser, tmp_path):
    m = pl.read_parquet(job / "metrics.parquet")
    suspects = set(pl.read_csv(job / "suspects.csv")["sample_id"].to_list())
    out = tmp_path / "sampled.html"
    subprocess.run([os.environ["CARTO_BIN"], "map", "--metrics", str(job / "metrics.parquet"), "--out", str(out),
                    "--max-points", "600"], check=True, capture_output=True)
    page, errors = open_map(browser, out)
    # Every ⌈n / 300⌉-th sample and every suspect, each once.
    stride = -(-m.height // 300)
    want = set(range(0, m.height, stride)) | suspects
    assert page.evaluate("window.cartoMap.n") == len(want) < m.height
    assert page.evaluate("window.cartoMap.density") == {"bins": 256, "total": m.height}
    assert "density" in page.inner_text("#note")
    # The layer is drawn under the points: shaded pixels on its canvas.
    count_shaded = """(() => { const c = document.getElementById('density');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let k = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) k++; return k; })()"""
    shaded = page.evaluate(count_shaded)
    assert shaded > 500, shaded
    # Zooming moves the layer with the points.
    before = page.evaluate("window.cartoMap.screenOfData(0, 1)")
    x, y = page.evaluate("window.cartoMap.screenOfData(0.05, 0.5)")
    page.mouse.move(x, y)
    page.mouse.wheel(0, -400)
    page.wait_for_function(f"window.cartoMap.screenOfData(0, 1)[0] !== {before[0]}", timeout=5000)
    page.wait_for_timeout(300)
    assert page.evaluate(count_shaded) != shaded, "the layer follows the camera"
    assert not errors, errors


def test_the_suspects_of_threshold_samples_filter_the_map(browser, tmp_path):
    out = tmp_path / "ts"
    subprocess.run([os.environ["CARTO_BIN"], "run", "--data", str(ROOT / "examples/fashion_mnist/fashion-2k.parquet"),
                    "--label-col", "label", "--features-col", "pixels", "--model", "mlp", "--epochs", "3",
                    "--threshold-samples", "--out", str(out), "-q"], check=True)
    m = pl.read_parquet(out / "metrics.parquet")
    flagged = int(m["is_suspect"].sum())
    assert 0 < flagged < m.height
    page, errors = open_map(browser, out / "datamap.html")
    page.select_option("#region", "suspect")
    assert page.inner_text("#shown").startswith(f"{flagged:,} of")
    i = int(m["is_suspect"].arg_max())
    x, y = page.evaluate(f"window.cartoMap.screenOf({i})")
    page.mouse.move(x, y)
    page.wait_for_function(f"window.cartoMap.hovered === {i}", timeout=5000)
    assert "is_suspect" in page.inner_text("#tooltip")
    assert not errors, errors
