"""GIM's self-training from videos: frames (`frames`), pseudo-labels (`labels`), a synthetic
video with exact homographies (`synthetic`), propagation to wide baselines (`propagate`)."""
