"""Dense matchers (DKM): a warp and a certainty for every pixel of image 0, sampled into matches."""
