"""`tiepoint eval / compare / download` argument handling and one-line errors."""

from tiepoint.cli import build_parser, main


def test_overrides_may_follow_options():
    a = build_parser().parse_args(
        [
            "eval",
            "hpatches",
            "--pipeline",
            "sift+nn",
            "--ransac-th",
            "-1",
            "matcher.ratio_thresh=0.9",
            "data.max_pairs=3",
        ]
    )
    assert a.ransac_th == -1 and a.overrides == ["matcher.ratio_thresh=0.9", "data.max_pairs=3"]
    a = build_parser().parse_args(["compare", "pairs", "t1", "t2", "--keys", "mnum_matches"])
    assert a.tags == ["t1", "t2"] and a.keys == ["mnum_matches"]


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    cases = [
        (
            ["eval", "hpatch", "--pipeline", "sift+nn"],
            "unknown benchmark 'hpatch' (did you mean 'hpatches'?)",
        ),
        (
            ["eval", "pairs", "--pipeline", "sift+nm", "--data-root", str(tmp_path)],
            "unknown pipeline 'sift+nm'",
        ),
        (
            ["eval", "pairs", "--pipeline", "sift+nn", "--estimator", "magsac"],
            "unknown estimator 'magsac'",
        ),
        (
            ["eval", "hpatches", "--pipeline", "sift+nn", "--data-root", str(tmp_path / "hp")],
            "run `tiepoint download hpatches`",
        ),
        (["eval", "pairs", "--pipeline", "sift+nn", "data.resise=3"], "unknown config key"),
        (["download", "pairs"], "needs no download"),
        (["download", "zeb", "--data-root", str(tmp_path)], "cannot be downloaded automatically"),
        (
            ["compare", "pairs", "nothing", "--output-dir", str(tmp_path)],
            "no results for tag 'nothing'",
        ),
    ]
    for argv, msg in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0], (argv, err)
