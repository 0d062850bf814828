"""Readers for published dataset layouts (CAMUS, CoNIC, MoNuSAC, BreaKHis, ChestX-ray, MedMNIST)
and the real public sets of ``../shared/data``. Each builds train / val / test splits from a
``data:`` config section; :data:`medbalance.data.build.READERS` maps a ``kind`` to its builder.
"""
