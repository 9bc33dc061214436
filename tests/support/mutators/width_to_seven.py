"""A deterministic mutator command for the tests: reads the request JSON, prints the code
with WIDTH set to 7.0 (the toy's best), and its seed and the parent's figures as comments."""

from __future__ import annotations

import json
import re
import sys

request = json.load(sys.stdin)
code = re.sub(r"^WIDTH = [-0-9.e]+", "WIDTH = 7.0", request["code"], count=1, flags=re.M)
figures = request["figures"]
shown = "none" if figures is None else f"{figures['median_ms']:.1f} ms"
sys.stdout.write(f"{code}# mutated with seed {request['seed']}; parent {shown}\n")
