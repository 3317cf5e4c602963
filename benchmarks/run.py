"""Run the benchmark suite: the same as ``python -m fastconv bench``.

    python benchmarks/run.py --plot ratios.png        # every case, fp32/fp64, 1 and 2 threads
    python benchmarks/run.py --cases resnet stem --dtype float32 --threads 2
"""

import sys

from fastconv.bench import main

if __name__ == "__main__":
    sys.exit(main())
