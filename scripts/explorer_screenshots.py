"""Screenshots of the explorer's pages for docs/explorer.md.

    .venv/bin/python scripts/explorer_screenshots.py RUN_DIR [OUT_DIR]

Serves RUN_DIR (a `fedledger run` directory, e.g. runs/demo/ledger after `make demo`) on a free
port of 127.0.0.1, opens each page in Debian's headless chromium (/usr/bin/chromium, driven by
playwright: no browser is downloaded), audits every round on the rounds page and one on its own
page, and writes PNG files to OUT_DIR (default docs/explorer/). docs/explorer/rounds-tampered.png
is the rounds page of a copy of the demo run with one update blob of round 2 altered.
"""

from __future__ import annotations

import sys
from pathlib import Path

from fedledger.explorer.app import create_app, running
from fedledger.explorer.browser import chromium
from fedledger.explorer.data import RunSource

PAGES = [
    ("task", ""),
    ("rounds", "rounds"),
    ("round", "rounds/3"),
    ("accuracy", "accuracy"),
    ("rewards", "rewards"),
    ("network", "network"),
]


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2:
        print(__doc__, file=sys.stderr)
        return 2
    run = Path(argv[0])
    out = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parents[1] / "docs/explorer"
    out.mkdir(parents=True, exist_ok=True)
    with running(create_app(RunSource(run))) as url, chromium(width=1560) as browser:
        page = browser.new_page()
        for name, path in PAGES:
            page.goto(url + path)
            if name == "round":
                page.click("button.audit")
                page.wait_for_selector(".verdict .checks", timeout=120_000)
            if name == "rounds":  # every round audited: green, or red with the failed checks
                page.click("button.audit-all")
                page.wait_for_selector("body[data-audited=all]", timeout=600_000)
            page.screenshot(path=str(out / f"{name}.png"), full_page=name not in ("rounds",))
            print(out / f"{name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
