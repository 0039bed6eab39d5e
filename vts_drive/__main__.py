import sys

from vts_drive.cli import main

sys.exit(main())
