"""``python -m demo``: the whole pipeline on the embedded default (``demo.driver``).

This process never loads 4-bit weights (training and the comparison run in child processes), so
bitsandbytes is kept out of it (``models.environment.without_bitsandbytes``).
"""

import sys

from demo.driver import main
from models.environment import without_bitsandbytes

without_bitsandbytes()
sys.exit(main())
