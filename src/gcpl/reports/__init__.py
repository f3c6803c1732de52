"""Reports: what people read. `eval` (one evaluation folder: results.json/.md, confusion.png),
`experiment` (one experiment: summary.md/.csv, accuracy_vs_shots.png, `gcpl report`), `paper`
(several experiments: the paper's Table 2 and Figure 3), `plots` (matplotlib drawing only,
the optional [plots] extra)."""
