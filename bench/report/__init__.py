"""From finished runs to <results_dir>/<suite>/: tidy table, comparisons, tables, figures, statistics."""
