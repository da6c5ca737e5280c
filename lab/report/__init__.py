"""Report: what a finished run says, in every format it is read in.

The results model (results.json, schema-checked) and the writer that turns a
run, or several merged runs, into junit.xml, summary.md and index.html, with
known failures applied and KCIDB JSON on request.
"""
