"""``python -m osup_mp.agent.reference``: the reference agent, as ``osup-mp-agent``."""

import sys

from osup_mp.agent.reference.agent import main

sys.exit(main())
