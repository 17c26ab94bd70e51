"""Training: a config-driven trainer for matchers on frozen extractors and for dense matchers.

experiment.py (config, lookup, load_experiment) · launch.py (`train`) · trainer.py (the loop) ·
validation.py · checkpoints.py · feature_cache.py
"""

from .experiment import DEFAULT_TRAIN_CONF, build_conf, load_experiment
from .launch import train
from .trainer import Trainer

__all__ = ["DEFAULT_TRAIN_CONF", "Trainer", "build_conf", "load_experiment", "train"]
