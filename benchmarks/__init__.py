"""Benchmarks of medbalance against reference implementations; run ``python -m benchmarks``.

Every entry point (``python -m benchmarks [NAME]``, ``python -m benchmarks.bench_NAME``) times
with the allocator setting medbalance's CLI starts with (:func:`medbalance._malloc.tune_malloc`),
for every library in the process alike; ``MEDBALANCE_MALLOC=default`` times glibc as shipped.
``bench_malloc`` compares the two in worker processes of its own.
"""

from medbalance._malloc import tune_malloc

tune_malloc()
