"""Benchmarks: export predictions once, evaluate them with any robust estimator, summarise, compare."""
