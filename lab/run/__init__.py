"""Run: pytest over a matrix of cells, from configuration to collected records.

The run's configuration that every worker reads, the per-test records the
workers write, the runner that starts pytest over the conformance suite with
live per-cell progress and then hands everything to the report, and the same
matrix spelled as a GitHub job matrix or a GitLab child pipeline.
"""
