"""The live page (`carto serve --http`, `carto run --ui`) in a real browser:
Debian's chromium, headless, driven by Playwright. A real coordinator, a real
worker and a real job on the Rotten Tomatoes reviews; the page must list the
job with its progress, draw the map of each committed epoch as it appears
(the points move), ask for the token when it has none, and never let the
token reach the server's output."""
import os
import re
import secrets
import subprocess
import threading
from pathlib import Path

import polars as pl

from conftest import ROOT

REVIEWS = ROOT / "examples/rotten_tomatoes/reviews.csv"


class Proc:
    """A process whose output lines are collected as they come."""

    def __init__(self, args, env=None):
        self.lines = []
        self.p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.seen = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            with self.seen:
                self.lines.append(line)
                self.seen.notify_all()

    def wait_line(self, pattern, timeout=60):
        with self.seen:
            ok = self.seen.wait_for(lambda: any(re.search(pattern, l) for l in self.lines), timeout=timeout)
            assert ok, f"no line matching {pattern!r} in {self.lines}"
            return next(re.search(pattern, l) for l in self.lines if re.search(pattern, l))

    def stop(self):
        self.p.terminate()
        try:
            self.p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.p.kill()
        return "".join(self.lines)


def epochs_shown(page):
    return int(page.evaluate("document.body.dataset.mapEpochs || '0'"))


def test_a_served_job_appears_epoch_by_epoch_behind_the_token(tmp_path, browser):
    carto = os.environ["CARTO_BIN"]
    token = secrets.token_hex(24)
    (tmp_path / "token").write_text(token + "\n")
    server = Proc([carto, "serve", "--listen", "127.0.0.1:0", "--state-dir", str(tmp_path / "state"),
                   "--http", "127.0.0.1:0", "--token-file", str(tmp_path / "token")])
    worker = None
    try:
        grpc_url = server.wait_line(r"serving on (http://\S+)").group(1)
        page_url = server.wait_line(r"live page on (http://\S+)").group(1)
        worker = Proc([str(Path(carto).parent / "carto-worker"), "--coordinator", grpc_url],
                      env={**os.environ, "CARTO_TOKEN": token})
        out = tmp_path / "out"
        (tmp_path / "job.toml").write_text(
            f'data = "{REVIEWS}"\nlabel_col = "label"\ntext_col = "text"\nid_col = "id"\nepochs = 6\nout = "{out}"\nname = "live-test"\n')
        sub = subprocess.run([carto, "submit", "--coordinator", grpc_url, str(tmp_path / "job.toml")],
                             capture_output=True, text=True, env={**os.environ, "CARTO_TOKEN": token})
        assert sub.returncode == 0, sub.stderr
        job_id = sub.stdout.strip()

        # Without a token the page asks for one; a wrong one is refused, the right one opens it.
        ctx = browser.new_context(viewport={"width": 1300, "height": 900})
        page = ctx.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(page_url)
        page.wait_for_selector("#login:not([hidden])", timeout=30000)
        page.fill("#token", "not-the-token-0123456789")
        page.click("#login button")
        page.wait_for_function("document.getElementById('login-error').textContent.includes('token')", timeout=10000)
        page.fill("#token", token)
        page.click("#login button")
        page.wait_for_selector("body[data-live=true]", timeout=30000)
        assert page.is_hidden("#login")
        ctx.close()

        # The token in the fragment: taken, and removed from the address bar.
        ctx = browser.new_context(viewport={"width": 1300, "height": 900})
        page = ctx.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{page_url}#token={token}")
        page.wait_for_selector(f"tr[data-job='{job_id}']", timeout=30000)
        assert token not in page.url
        assert "live-test" in page.inner_text(f"tr[data-job='{job_id}']")

        # An epoch appears while the job trains, then another: the same points, moved.
        page.wait_for_function("Number(document.body.dataset.mapEpochs || 0) >= 1", timeout=180000)
        first = epochs_shown(page)
        n = pl.read_csv(REVIEWS).height
        assert page.evaluate("window.cartoMap.n") == n
        before = page.evaluate("Array.from(window.cartoMap.scatterplot.get('points').slice(0, 200), p => [p[0], p[1]])")
        row = page.inner_text(f"tr[data-job='{job_id}']")
        assert "running" in row or "succeeded" in row, row
        page.wait_for_function(f"Number(document.body.dataset.mapEpochs || 0) > {first}", timeout=180000)
        page.wait_for_timeout(800)  # the transition's 600 ms
        after = page.evaluate("Array.from(window.cartoMap.scatterplot.get('points').slice(0, 200), p => [p[0], p[1]])")
        moved = sum(1 for a, b in zip(before, after) if abs(a[0] - b[0]) + abs(a[1] - b[1]) > 1e-4)
        assert moved > 100, f"only {moved} of 200 points moved between epoch {first} and the next"
        assert first < 6, "the page saw the job while it trained"

        # At the end: the final map, the job succeeded, hover shows a review.
        page.wait_for_selector(f"tr[data-job='{job_id}'] >> text=succeeded", timeout=300000)
        page.wait_for_function("document.body.dataset.mapEpochs === '6'", timeout=30000)
        m = pl.read_parquet(out / "metrics.parquet")
        texts = pl.read_csv(REVIEWS)["text"]
        page.wait_for_timeout(800)
        i = int(m["variability"].arg_max())
        x, y = page.evaluate(f"window.cartoMap.screenOf({i})")
        page.mouse.move(x, y)
        page.wait_for_function(f"window.cartoMap.hovered === {i}", timeout=5000)
        assert texts[i][:60] in page.inner_text("#tooltip")
        assert not errors, errors
        ctx.close()
    finally:
        if worker:
            worker.stop()
        log = server.stop()
    assert token not in log, "the token reached the server's output"


def test_carto_run_ui_prints_the_page_and_the_page_follows_the_job(tmp_path, browser):
    carto = os.environ["CARTO_BIN"]
    run = Proc([carto, "run", "--ui", "--data", str(REVIEWS), "--label-col", "label", "--text-col", "text",
                "--epochs", "5", "--out", str(tmp_path / "out")])
    try:
        url = run.wait_line(r"live page at (http://127\.0\.0\.1:\d+/#token=[0-9a-f]{32,})").group(1)
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.goto(url)
        page.wait_for_function("Number(document.body.dataset.mapEpochs || 0) >= 1", timeout=180000)
        assert page.evaluate("window.cartoMap.n") == pl.read_csv(REVIEWS).height
        assert page.is_hidden("#login")
    finally:
        run.p.wait(timeout=300)
        run.stop()
    assert run.p.returncode == 0, "".join(run.lines)
