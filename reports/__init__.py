"""Result bundles: written by `reports.writer.ResultsWriter` during a run, read, verified and
merged by ``python -m reports`` (`reports.bundle`)."""
