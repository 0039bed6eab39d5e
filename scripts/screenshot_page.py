"""A PNG of a page as headless Chromium renders it, e.g. eval's report.html for the README:

    python scripts/screenshot_page.py results/eval_synth/report.html docs/eval_report_synth.png --only-disagree

--only-disagree ticks the page's filter first, so the samples on the picture are ones where modes
disagree. A page with console errors is refused: the picture would not show what users see.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vts_drive.testing.chromium import Page


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path, help="an HTML file")
    parser.add_argument("png", type=Path, help="where the screenshot goes")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1800)
    parser.add_argument("--only-disagree", action="store_true", help="tick the report page's filter first")
    args = parser.parse_args()
    with Page(args.page, args.width, args.height) as page:
        if args.only_disagree:
            page.evaluate("document.getElementById('only-disagree').click()")
        if page.errors():
            raise SystemExit(f"{args.page}: " + "; ".join(page.errors()))
        page.screenshot(args.png)
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
