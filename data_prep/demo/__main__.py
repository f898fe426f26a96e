"""python -m data_prep.demo --out_dir DIR [...]: builds the demo dataset (see `dataset`)."""

import sys

from data_prep.demo.dataset import main

sys.exit(main())
