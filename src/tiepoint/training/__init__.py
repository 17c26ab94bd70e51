"""Training: a config-driven trainer for matchers on frozen extractors (see `trainer.py`)."""

from .trainer import DEFAULT_TRAIN_CONF, build_conf, load_experiment, train

__all__ = ["DEFAULT_TRAIN_CONF", "build_conf", "load_experiment", "train"]
