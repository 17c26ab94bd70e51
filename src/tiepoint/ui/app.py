"""The Gradio page: a thin layout over `session`, `render`, `inspector` and `paths`.

Every callback returns a one-line message instead of raising (`_guard`), so the page shows
"image A: corrupt or truncated image" rather than a traceback.
"""

from __future__ import annotations

import html
import logging
import tempfile
from pathlib import Path

from ..errors import TiepointError
from . import paths as paths_lib
from .inspector import ResultsFolder
from .render import PICTURES, draw_all, svg_scatter, write_h5
from .session import (
    ESTIMATORS,
    HOMOGRAPHY,
    Knobs,
    MatchSession,
    all_pipelines,
    counts_row,
    estimate,
    geometry_models,
    parse_intrinsics,
)

logger = logging.getLogger("tiepoint")

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "pair"
SOURCES = ("bundled example", "upload", "server path")
FAST_PIPELINES = ("sift+nn", "xfeat+lighterglue", "aliked+lightglue")

# a click on a scatter point writes its pair into the pair box and presses "open pair"
HEAD = """<script>
document.addEventListener('click', (e) => {
  const c = e.target.closest ? e.target.closest('circle.tp-pair') : null;
  if (!c) return;
  const box = document.querySelector('#pair-pick textarea, #pair-pick input');
  if (!box) return;
  const setter = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(box), 'value').set;
  setter.call(box, c.dataset.pair);
  box.dispatchEvent(new Event('input', {bubbles: true}));
  setTimeout(() => document.querySelector('#pair-open').click(), 100);
});
</script>"""


def _message(e: Exception) -> str:
    if isinstance(e, TiepointError):
        return f"⚠️ {e}"
    logger.exception("ui callback failed")
    return f"⚠️ internal error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def counts_html(rows: list[dict], cls: str = "tp-counts") -> str:
    if not rows:
        return ""
    keys = list(rows[0])
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = "".join(
        f'<tr data-row="{html.escape(str(r[keys[0]]), quote=True)}">'
        + "".join(
            f'<td data-k="{html.escape(k)}">{html.escape("" if r.get(k) is None else str(r[k]))}</td>'
            for k in keys
        )
        + "</tr>"
        for r in rows
    )
    return f'<table class="{cls}"><tr>{head}</tr>{body}</table>'


class App:
    """State shared by all callbacks: loaded pipelines, cached matches, where files go."""

    def __init__(self, allow=(), results=None, device=None, max_mb=paths_lib.MAX_UPLOAD_MB):
        self.paths = paths_lib.ServerPaths(allow)
        self.results = ResultsFolder(results) if results else None
        self.session = MatchSession(device=device)
        self.max_mb = max_mb
        self.workdir = Path(tempfile.mkdtemp(prefix="tiepoint-ui-"))
        self.statuses = {s.name: s for s in all_pipelines()}

    # ------------------------------------------------------------ inputs
    def images(self, source, file0, file1, path0, path1) -> tuple[Path, Path]:
        if source == "bundled example":
            pair = EXAMPLE / "box.png", EXAMPLE / "box_in_scene.png"
            if not all(p.is_file() for p in pair):
                raise paths_lib.PathRefused(f"the bundled example is not at {EXAMPLE}")
        elif source == "upload":
            if not file0 or not file1:
                raise paths_lib.PathRefused("upload two images (A and B)")
            pair = tuple(paths_lib.check_upload(f, self.max_mb) for f in (file0, file1))
        else:
            pair = self.paths.resolve(path0), self.paths.resolve(path1)
        for p, name in zip(pair, ("image A", "image B")):
            paths_lib.check_image(p, name)
        return pair

    @staticmethod
    def knobs(resize, max_kp, filter_th) -> Knobs:
        return Knobs(
            int(resize) if resize else None,
            int(max_kp) if max_kp else None,
            float(filter_th) if filter_th else None,
        )

    def estimator_args(self, model, estimator, threshold, k0, k1):
        th = float(threshold) if threshold not in (None, "", 0) else None
        K0 = K1 = None
        if model == "essential":
            K0, K1 = (
                parse_intrinsics(k0, "intrinsics of A"),
                parse_intrinsics(k1, "intrinsics of B"),
            )
        return dict(model=model, estimator=estimator, threshold=th, K0=K0, K1=K1)

    # ------------------------------------------------------------ match tab
    def run_one(self, pair, pipeline, knobs, est_args, stem, which=PICTURES):
        result, cached = self.session.match(pair[0], pair[1], pipeline, knobs)
        est = estimate(result, **est_args) if len(result) else None
        out = self.workdir / f"{abs(hash((pair, pipeline, knobs))):x}"
        files = draw_all(result, pair[0], pair[1], est, out, pipeline, stem, which)
        files["h5"] = write_h5(
            result,
            out / f"{stem}_matches.h5",
            {"pipeline": pipeline, "image0": pair[0].name, "image1": pair[1].name},
        )
        return result, est, cached, files

    def match(
        self,
        source,
        f0,
        f1,
        p0,
        p1,
        pipeline,
        resize,
        max_kp,
        filt,
        model,
        estr,
        th,
        k0,
        k1,
        progress=None,
    ):
        try:
            if progress:
                progress(0.05, desc="checking images")
            pair = self.images(source, f0, f1, p0, p1)
            knobs = self.knobs(resize, max_kp, filt)
            args = self.estimator_args(model, estr, th, k0, k1)
            if progress:
                progress(0.2, desc=f"matching with {pipeline}")
            result, est, cached, files = self.run_one(pair, pipeline, knobs, args, "pair")
            row = counts_row(pipeline, result, est, cached)
            note = f" — {est.note}" if est is not None and est.note else ""
            msg = (
                f"{pipeline}: {row['matches']} matches, {row['inliers']} {args['estimator']} "
                f"{args['model']} inliers ({'from cache, not re-matched' if cached else 'matched'}"
                f"; pipeline runs so far: {self.session.runs}){note}"
            )
            return (
                msg,
                counts_html([row]),
                str(files["matches"]),
                str(files["keypoints"]),
                str(files["warp"]),
                str(files["inliers"]),
                [str(files[k]) for k in ("h5", "matches", "keypoints", "warp", "inliers")],
            )
        except Exception as e:
            return (_message(e), "", None, None, None, None, None)

    def side_by_side(
        self,
        source,
        f0,
        f1,
        p0,
        p1,
        pipelines,
        resize,
        max_kp,
        filt,
        model,
        estr,
        th,
        k0,
        k1,
        progress=None,
    ):
        try:
            if not pipelines or len(pipelines) < 2:
                raise paths_lib.PathRefused("choose two or more pipelines")
            pair = self.images(source, f0, f1, p0, p1)
            knobs = self.knobs(resize, max_kp, filt)
            args = self.estimator_args(model, estr, th, k0, k1)
            rows, pics, problems = [], [], []
            for i, name in enumerate(pipelines):
                if progress:
                    progress(i / len(pipelines), desc=f"matching with {name}")
                try:
                    result, est, cached, files = self.run_one(
                        pair, name, knobs, args, "pair", ("matches",)
                    )
                except TiepointError as e:
                    problems.append(str(e))
                    continue
                rows.append(counts_row(name, result, est, cached))
                pics.append((str(files["matches"]), name))
            msg = f"{len(rows)} pipelines on {pair[0].name} ↔ {pair[1].name}"
            if problems:
                msg += " — ⚠️ " + "; ".join(problems)
            return msg, counts_html(rows, "tp-sbs"), pics
        except Exception as e:
            return _message(e), "", []

    # ------------------------------------------------------------ inspector
    def _folder(self) -> ResultsFolder:
        if self.results is None:
            raise paths_lib.PathRefused("no results folder: start `tiepoint ui --results DIR`")
        return self.results

    def inspector_benchmarks(self):
        try:
            names = self._folder().benchmarks()
            return names, f"{len(names)} benchmark(s) in {self.results.root}"
        except Exception as e:
            return [], _message(e)

    def inspector_show(self, benchmark, tags, progress=None):
        try:
            folder = self._folder()
            if not benchmark:
                raise paths_lib.PathRefused("choose a benchmark")
            if not tags or len(tags) < 2:
                raise paths_lib.PathRefused("choose two or more tags")
            tasks = folder.tasks(benchmark, tags)
            if not tasks:
                raise paths_lib.PathRefused(f"the runs {', '.join(tags)} share no task")
            png = self.workdir / f"compare_{benchmark}_{abs(hash(tuple(tags))):x}.png"
            table = folder.compare(benchmark, tags, png)
            svgs, names = [], []
            for task in tasks:
                n, a, b, key, cap = folder.scatter(benchmark, tags[0], tags[1], task)
                svgs.append(
                    f"<div><b>{html.escape(task)}</b><br>"
                    + svg_scatter(n, a, b, f"{tags[0]} {key}", f"{tags[1]} {key}", cap)
                    + "</div>"
                )
                names += n
            scatter = '<div style="display:flex;gap:16px">' + "".join(svgs) + "</div>"
            msg = f"{benchmark}: {len(names)} pairs in common; click a point to open its pair"
            return msg, table, str(png), scatter, names
        except Exception as e:
            return _message(e), "", None, "", []

    def inspector_pair(self, benchmark, tags, pair, progress=None):
        try:
            folder = self._folder()
            if not pair:
                raise paths_lib.PathRefused("choose a pair (click a point of the scatter)")
            rows, pics = [], []
            for tag in tags or []:
                result = folder.pair_result(benchmark, tag, pair)
                task = next(
                    t
                    for t, r in folder.per_pair(benchmark, tag).items()
                    if pair in list(r["names"])
                )
                rows.append(folder.pair_row(benchmark, tag, task, pair))
                im0, im1 = folder.pair_images(benchmark, tag, pair)
                out = self.workdir / f"inspect_{abs(hash((benchmark, tag, pair))):x}"
                files = draw_all(result, im0, im1, None, out, tag, "pair", which=("matches",))
                pics.append((str(files["matches"]), tag))
            return f"pair {pair}", counts_html(rows, "tp-pair-rows"), pics
        except Exception as e:
            return _message(e), "", []


def build(app: App):
    import gradio as gr

    statuses = app.statuses
    choices = [(s.label(), s.name) for s in statuses.values()]
    ready = [s.name for s in statuses.values() if s.ready]
    default = next((p for p in ("aliked+lightglue", *FAST_PIPELINES) if p in ready), None)
    table = "\n".join(
        f"| {s.name} | {'dense' if s.dense else 'sparse'} | "
        + (s.problem() or ", ".join(f"{w} ✓" for w in s.weights) or "no weights needed")
        + " |"
        for s in statuses.values()
    )
    with gr.Blocks(title="tiepoint", analytics_enabled=False) as demo:
        gr.Markdown("# tiepoint\nMatch two images, compare pipelines, inspect benchmark runs.")
        with gr.Tab("Match", id="match"):
            with gr.Row():
                source = gr.Radio(list(SOURCES), value=SOURCES[0], label="images", elem_id="source")
            with gr.Row():
                f0 = gr.File(
                    label=f"image A (upload, ≤ {app.max_mb:g} MB)",
                    file_types=["image"],
                    height=140,
                    elem_id="file0",
                )
                f1 = gr.File(
                    label=f"image B (upload, ≤ {app.max_mb:g} MB)",
                    file_types=["image"],
                    height=140,
                    elem_id="file1",
                )
            with gr.Row():
                allowed = ", ".join(map(str, app.paths.allowed)) or "none: start with --allow DIR"
                p0 = gr.Textbox(label=f"image A on the server (under: {allowed})")
                p1 = gr.Textbox(label="image B on the server")
            with gr.Row():
                pipeline = gr.Dropdown(choices, value=default, label="pipeline", elem_id="pipeline")
                resize = gr.Number(1024, label="resize (long side, 0: native)", precision=0)
                max_kp = gr.Number(None, label="max keypoints (0: the pipeline's)", precision=0)
                filt = gr.Number(None, label="matcher filter threshold (0: the pipeline's)")
            with gr.Accordion("pipelines and their weights", open=False):
                gr.Markdown("| pipeline | kind | weights |\n|---|---|---|\n" + table)
            with gr.Row():
                model = gr.Radio(
                    geometry_models(), value=HOMOGRAPHY, label="model", elem_id="model"
                )
                estr = gr.Radio(
                    list(ESTIMATORS), value="opencv", label="estimator", elem_id="estimator"
                )
                th = gr.Number(
                    None, label="inlier threshold px (0: the estimator's default)", elem_id="th"
                )
                k0 = gr.Textbox(label="intrinsics A: fx fy cx cy (essential)")
                k1 = gr.Textbox(label="intrinsics B: fx fy cx cy")
            with gr.Row():
                run = gr.Button("Match", variant="primary", elem_id="run")
                again = gr.Button("Re-estimate (no re-matching)", elem_id="estimate")
            status = gr.Markdown(elem_id="status")
            counts = gr.HTML(elem_id="counts")
            with gr.Row():
                im_matches = gr.Image(
                    label="matches", type="filepath", elem_id="img-matches", show_label=False
                )
                im_inliers = gr.Image(
                    label="inliers", type="filepath", elem_id="img-inliers", show_label=False
                )
            with gr.Row():
                im_kpts = gr.Image(
                    label="keypoints", type="filepath", elem_id="img-keypoints", show_label=False
                )
                im_warp = gr.Image(
                    label="warp / blend", type="filepath", elem_id="img-warp", show_label=False
                )
            downloads = gr.File(label="download (h5, PNGs)", file_count="multiple")
            # the pair and the settings, shared by the Match and Side-by-side tabs around the
            # pipeline choice (one dropdown there, a checkbox group here)
            pair_inputs = [source, f0, f1, p0, p1]
            settings = [resize, max_kp, filt, model, estr, th, k0, k1]
            inputs = [*pair_inputs, pipeline, *settings]
            outputs = [status, counts, im_matches, im_kpts, im_warp, im_inliers, downloads]

            def do_match(*a, progress=gr.Progress()):
                return app.match(*a, progress=progress)

            run.click(do_match, inputs, outputs)
            again.click(do_match, inputs, outputs)
        with gr.Tab("Side by side", id="sbs"):
            gr.Markdown("The pair and settings of the Match tab, through several pipelines.")
            sbs_pipes = gr.CheckboxGroup(
                choices,
                value=[p for p in FAST_PIPELINES if p in ready][:2],
                label="pipelines",
                elem_id="sbs-pipelines",
            )
            sbs_run = gr.Button("Compare", variant="primary", elem_id="sbs-run")
            sbs_status = gr.Markdown(elem_id="sbs-status")
            sbs_counts = gr.HTML(elem_id="sbs-counts")
            sbs_gallery = gr.Gallery(label="matches", columns=2, elem_id="sbs-gallery")

            def do_sbs(s, a, b, c, d, pipes, *rest, progress=gr.Progress()):
                return app.side_by_side(s, a, b, c, d, pipes, *rest, progress=progress)

            sbs_inputs = [*pair_inputs, sbs_pipes, *settings]
            sbs_run.click(do_sbs, sbs_inputs, [sbs_status, sbs_counts, sbs_gallery])
        with gr.Tab("Benchmark inspector", id="inspector"):
            root = str(app.results.root) if app.results else "none: start with --results DIR"
            gr.Markdown(f"Runs written by `tiepoint eval` under **{html.escape(root)}**.")
            with gr.Row():
                bench = gr.Dropdown([], label="benchmark", elem_id="bench")
                tags = gr.CheckboxGroup([], label="tags (two or more)", elem_id="tags")
                show = gr.Button("Show", variant="primary", elem_id="inspect-show")
            ins_status = gr.Markdown(elem_id="ins-status")
            with gr.Row():
                scatter = gr.HTML(elem_id="scatter")
                curves = gr.Image(
                    label="cumulative error curves", type="filepath", elem_id="curves"
                )
            summary = gr.Code(
                label="summaries (AUCs in %), as `tiepoint compare` prints them", elem_id="summary"
            )
            with gr.Row():
                pair = gr.Textbox(label="pair", elem_id="pair-pick")
                pair_open = gr.Button("open pair", elem_id="pair-open")
            pair_rows = gr.HTML(elem_id="pair-rows")
            pair_gallery = gr.Gallery(
                label="the pair's matches per tag", columns=2, elem_id="pair-gallery"
            )
            names = gr.State([])

            def load_benchmarks():
                found, msg = app.inspector_benchmarks()
                return gr.update(choices=found, value=found[0] if found else None), msg

            def load_tags(b):
                t = app.results.tags(b) if (app.results and b) else []
                return gr.update(choices=t, value=t[:2])

            demo.load(load_benchmarks, None, [bench, ins_status])
            bench.change(load_tags, bench, tags)

            def do_show(b, t, progress=gr.Progress()):
                msg, table, png, svg, n = app.inspector_show(b, t, progress)
                return msg, table, png, svg, n

            show.click(do_show, [bench, tags], [ins_status, summary, curves, scatter, names])

            def do_pair(b, t, p, progress=gr.Progress()):
                return app.inspector_pair(b, t, p, progress)

            pair_open.click(do_pair, [bench, tags, pair], [ins_status, pair_rows, pair_gallery])
    return demo


def launch(app: App, host="127.0.0.1", port=None, block=True):
    demo = build(app)
    demo.queue()
    kw = dict(
        server_name=host,
        server_port=port,
        max_file_size=f"{app.max_mb:g}mb",
        allowed_paths=[str(app.workdir)],
        prevent_thread_lock=not block,
        quiet=True,
        head=HEAD,
    )
    demo.launch(**kw)
    return demo
