"""Readers for published dataset layouts (CAMUS, CoNIC, MoNuSAC, BreaKHis, ChestX-ray, MedMNIST,
nnU-Net's raw layout) and the real public sets of ``../shared/data``. Each builds train / val /
test splits from a ``data:`` config section; :data:`medbalance.data.build.READERS` maps a
``kind`` to its builder.
"""
