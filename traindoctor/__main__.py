"""``python -m traindoctor`` is the ``traindoctor`` command."""

import sys

from traindoctor.cli import main

sys.exit(main())
