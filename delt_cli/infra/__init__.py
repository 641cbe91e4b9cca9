"""Plumbing every layer uses: errors, the stderr console, atomic files, the output guard, YAML
configs, ranks and launching, offline assets, headless figures. Nothing here knows about
scoring, selection, ordering, training or evaluation."""
