import sys

from lossless.cli import main

sys.exit(main())
