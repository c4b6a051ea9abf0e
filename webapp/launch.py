"""``python -m webapp.launch run app.py [options]``: ``streamlit run`` with the app's imports started first
(:mod:`webapp.preload`), so that they run while the server starts and the browser loads the page. ``make app`` and
the app's benchmarks and browser tests start the server this way."""
from __future__ import annotations

import sys

from webapp import preload


def main() -> None:
    from streamlit.web import cli  # first, in this thread: streamlit's own imports (plotly, pandas) are not raced

    preload.start()
    sys.argv = ["streamlit", *sys.argv[1:]]
    cli.main(prog_name="python -m webapp.launch")  # its usage and error lines name this command


if __name__ == "__main__":
    main()
