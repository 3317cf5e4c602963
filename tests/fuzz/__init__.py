"""A differential fuzzer of every public op against fastconv.reference.

``python -m tests.fuzz --help`` (from the repository root) tells how to run
it; :mod:`tests.fuzz.cases` generates and judges one case per seed.
"""
