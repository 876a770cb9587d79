"""The explorer in a real headless browser: Debian's chromium driven by playwright (never a
downloaded browser). Skipped only when /usr/bin/chromium is absent (requirements/apt.txt)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedledger.audit import CHECKS
from fedledger.explorer.app import create_app, running
from fedledger.explorer.browser import CHROMIUM, chromium
from fedledger.explorer.data import RunSource
from fedledger.ledger.records import Submitted
from fedledger.rundir import AUDIT_FILE, JOURNAL_FILE, REPORT_FILE
from tests.explorer.conftest import ROUNDS, in_progress_copy

WAIT_MS = 180_000
"""How long a test waits for the page to show something (a hang guard, not a speed check)."""

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's chromium is not installed (/usr/bin/chromium: requirements/apt.txt)",
)

if CHROMIUM.exists():
    from playwright.sync_api import BrowserContext, Page


@pytest.fixture(scope="module")
def browser() -> Iterator[BrowserContext]:
    with chromium(width=1360) as context:
        yield context


def _audit_every_round(page: Page) -> None:
    page.click("button.audit-all")
    page.wait_for_selector("body[data-audited=all]", timeout=WAIT_MS)


def test_the_rounds_page_shows_every_round_and_they_verify(
    browser: BrowserContext, run_dir: Path
) -> None:
    with running(create_app(RunSource(run_dir))) as url:
        page = browser.new_page()
        page.goto(url + "rounds")
        rows = page.locator("tr.round")
        assert [rows.nth(i).get_attribute("data-round") for i in range(rows.count())] == [
            str(r)
            for r in range(1, ROUNDS + 2)  # and the last round's attestations
        ]
        for r in range(1, ROUNDS + 1):
            assert "finalized" in page.inner_text(f"#round-{r}")
        _audit_every_round(page)
        for r in range(1, ROUNDS + 1):
            assert "audit-ok" in (page.get_attribute(f"#round-{r}", "class") or "")
            assert page.locator(f"#round-{r} span.check.fail").count() == 0
            ok = page.locator(f"#round-{r} span.check.ok").count()
            assert ok == len(CHECKS)  # every check, the committee's ("none") included
        page.close()


def test_a_tampered_blob_shows_its_round_in_red_with_the_failed_check(
    browser: BrowserContext, tampered: tuple[Path, Submitted]
) -> None:
    run, victim = tampered
    with running(create_app(RunSource(run))) as url:
        page = browser.new_page()
        page.goto(url + "rounds")
        _audit_every_round(page)
        assert "audit-fail" in (page.get_attribute("#round-2", "class") or "")
        failed = page.locator("#round-2 span.check.fail")
        assert sorted(failed.all_inner_texts()) == ["aggregate", "blobs"]
        assert f"blobs: {victim.member}'s update" in page.inner_text("#round-2 .failures")
        for r in (1, 3):
            assert "audit-ok" in (page.get_attribute(f"#round-{r}", "class") or "")
        colour = page.eval_on_selector("#round-2 td", "td => getComputedStyle(td).backgroundColor")
        assert colour == "rgb(253, 228, 226)"  # the failed round's red

        page.goto(url + "rounds/2")
        page.click("button.audit")
        page.wait_for_selector(".verdict .checks", timeout=WAIT_MS)
        assert "audit-fail" in (page.get_attribute("h1#round-2", "class") or "")
        assert "blobs" in page.locator(".verdict span.check.fail").all_inner_texts()
        page.close()


def test_the_page_follows_a_run_in_progress(
    browser: BrowserContext, run_dir: Path, tmp_path: Path
) -> None:
    run = in_progress_copy(run_dir, tmp_path)
    with running(create_app(RunSource(run))) as url:
        page = browser.new_page()
        page.goto(url + "rounds")
        assert "run in progress" in page.inner_text("#live")
        assert page.locator("button.audit").count() == 0  # no chain to audit yet
        for name in (JOURNAL_FILE, REPORT_FILE, AUDIT_FILE):  # the run ends
            shutil.copy(run_dir / name, run / name)
        page.wait_for_selector("button.audit[data-round='3']", timeout=WAIT_MS)
        assert "run in progress" not in page.inner_text("#live")
        assert page.locator("tr.round").count() == ROUNDS + 1
        page.close()
