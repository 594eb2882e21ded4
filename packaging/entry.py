"""Entry script of the frozen application (PyInstaller runs this file as __main__)."""
import multiprocessing
import sys

from liverview.app import main

if __name__ == "__main__":
    # A frozen executable re-runs itself for every multiprocessing child on Windows and macOS; without this
    # call each child would start another copy of the app instead of running its task.
    multiprocessing.freeze_support()
    sys.exit(main())
