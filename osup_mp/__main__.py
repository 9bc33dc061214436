"""``python -m osup_mp`` is ``osup-mp``."""

from osup_mp.cli import main

main()
