"""Seed 002's experiments: the loss study (:mod:`.loss_study`) and reuse background
(:mod:`.reuse_background`), sharing the tables of :mod:`.tables`."""
