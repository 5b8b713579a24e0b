"""Entry point: `python app.py [--flags]` serves the Gradio UI and the REST job API on one port.

Settings come from WAN_DEMO_* env vars and CLI flags (`python app.py --help`, docs/settings.md).
They are read and checked first, with the standard library only, so `--help` and a bad setting
answer at once (exit status 2) instead of after torch, diffusers and gradio load. On a host
without CUDA (WAN_DEMO_MODEL=auto) the built-in tiny model runs and a banner says so.
`python app.py --doctor` checks the machine and the configuration instead of serving.
"""

import sys

from wan_demo.core.settings import from_cli


def main() -> None:
    settings = from_cli()  # --help exits 0 here, a bad setting exits 2: nothing heavy imported yet
    if "--doctor" in sys.argv[1:]:  # spelled in full: the parser takes no abbreviations
        from wan_demo.model.doctor import run as doctor

        raise SystemExit(doctor(settings))
    import spaces  # noqa: F401  # ZeroGPU: before anything touches CUDA (reading settings touches none)

    from wan_demo.server import run

    run(settings)


if __name__ == "__main__":
    main()
