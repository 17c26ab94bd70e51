"""`tiepoint ui`: a web page to match two images, compare pipelines and inspect benchmark runs.

The logic (path checks, the match cache, estimators, pictures, result files) lives in plain
modules testable without a browser; `app.py` only lays it out with Gradio (optional extra `ui`).
"""
