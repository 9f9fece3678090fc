"""Draw input | truth | prediction of each named run on target test scenes.

    python benchmarks/segmentation_figure.py OUT.png "source only=RUN" "adaptseg=RUN" ...
"""

from __future__ import annotations

import sys

from tamebias.report.segmentation_figures import segmentation_figure

if __name__ == "__main__":
    output, *pairs = sys.argv[1:]
    runs = dict(pair.split("=", 1) for pair in pairs)
    print(segmentation_figure(runs, output))
