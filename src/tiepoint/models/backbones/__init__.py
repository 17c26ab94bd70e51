"""Backbone networks shared by several models (plain torch, checkpoint layouts of the originals)."""
