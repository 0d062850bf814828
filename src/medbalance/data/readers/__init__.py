"""Readers for published dataset layouts (CAMUS, CoNIC, MoNuSAC, BreaKHis, ChestX-ray, MedMNIST,
nnU-Net's raw layout) and the real public sets of ``../shared/data``. Each builds train / val /
test splits from a ``data:`` config section and defines that section's schema beside it;
:data:`medbalance.data.kinds.KINDS` maps a ``kind`` to its schema, builder and task.
"""
