"""Dense matchers: a warp from every pixel of image 0 into image 1 plus a per-pixel certainty."""
