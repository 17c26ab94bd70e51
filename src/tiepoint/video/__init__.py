"""GIM's video pipeline: frames, masks, labels, propagation to wide baselines."""
