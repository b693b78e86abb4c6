"""The `mambaweb` command: one entry point, one sub-command per `tools/cmd_<name>.py`.

Each command module defines `register(subparsers)`, which adds its parser and sets
`func` to a callable taking the parsed args and returning an exit code.
"""
import argparse
import importlib
import pkgutil
import sys

import tools


def main(argv=None):
    parser = argparse.ArgumentParser(prog="mambaweb", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for info in sorted(pkgutil.iter_modules(tools.__path__), key=lambda m: m.name):
        if info.name.startswith("cmd_"):
            importlib.import_module(f"tools.{info.name}").register(sub)
    args = parser.parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
