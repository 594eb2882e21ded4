import sys

from liverview.app import main

sys.exit(main())
