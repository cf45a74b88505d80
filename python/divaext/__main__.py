"""``python -m divaext …``: the same as the ``divaext`` console script."""
import sys

from .cli import main

sys.exit(main())
