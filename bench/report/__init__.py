"""From finished runs to results/<suite>/: tidy table, comparisons, tables, figures, statistics."""
