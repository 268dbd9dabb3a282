"""Command-line entry points shared by ``app.py`` and ``python -m playground``."""

from __future__ import annotations

import sys

from playground.config import Settings
from playground.errors import SettingsError


def serve(argv: list[str]) -> int:
    """Start the web app; bad settings stop it with a message naming the variable or flag."""
    try:
        settings = Settings.load(argv)
    except SettingsError as exc:
        print(f"playground: {exc}", file=sys.stderr)
        return 2
    from playground.backends.selection import startup_line
    from playground.services import Services
    from playground.ui.app import launch

    services = Services.create(settings)
    print(startup_line(services.hardware), flush=True)
    print(f"[playground] mode={settings.mode} data_dir={settings.data_dir} "
          f"offline={settings.offline} http://{settings.host}:{settings.port}", flush=True)
    try:
        launch(services)
    finally:
        services.close()
    return 0
