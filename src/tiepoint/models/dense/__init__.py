"""Dense matchers (DKM): a warp of every pixel of image 0 into image 1 plus a certainty."""
