"""Benchmarks for vhba-lab: data path (bench.datapath) and lab timings (bench.lab).

Benchmarks print JSON with ratios against baselines measured in the same run;
they are never timed tests.  See bench/README.md.
"""
