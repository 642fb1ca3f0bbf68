import sys

from losstune.cli import main

sys.exit(main())
