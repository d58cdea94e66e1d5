import sys

from detect.cli import main

sys.exit(main())
