"""`tiepoint ui`: start the web page (needs the optional extra: pip install 'tiepoint[ui]')."""

from __future__ import annotations

from ..errors import ConfigError
from .paths import MAX_UPLOAD_MB


def cmd_ui(args) -> int:
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise ConfigError("`tiepoint ui` needs Gradio: pip install 'tiepoint[ui]'") from None
    import logging
    import os

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # a local tool: no phoning home
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own requests, not news
    from .app import App, launch

    app = App(allow=args.allow, results=args.results, device=args.device, max_mb=args.max_upload_mb)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}: the page is reachable from other machines")
    print(f"tiepoint ui on http://{args.host}:{args.port or 7860} (Ctrl-C stops it)")
    launch(app, host=args.host, port=args.port)
    return 0


def register(sub) -> None:
    p = sub.add_parser("ui", help="web page: match two images, compare pipelines, inspect runs")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default: loopback only)")
    p.add_argument("--port", type=int, default=None, help="port (default: 7860 or the next free)")
    p.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="DIR",
        help="a folder whose images the page may read by server path (repeatable)",
    )
    p.add_argument("--results", default=None, help="results folder to inspect (outputs/results)")
    p.add_argument("--device", default=None)
    p.add_argument("--max-upload-mb", type=float, default=MAX_UPLOAD_MB)
    p.set_defaults(func=cmd_ui)
