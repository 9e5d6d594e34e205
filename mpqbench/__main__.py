import sys

from mpqbench.cli import main

sys.exit(main())
