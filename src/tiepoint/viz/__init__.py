"""Pictures people look at: matches side by side, warped overlays, cumulative error curves."""
