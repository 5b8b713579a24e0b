"""Entry point: `python app.py [--flags]` serves the Gradio UI and the REST job API on one port.

Settings come from WAN_DEMO_* env vars and CLI flags (see README). Without a CUDA GPU and weights,
the built-in tiny model runs and a banner says so.
"""

import spaces  # noqa: F401  # ZeroGPU: must be imported before anything touches CUDA

from wan_demo.server import main

if __name__ == "__main__":
    main()
