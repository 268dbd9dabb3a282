"""Command-line entry points shared by ``app.py`` and ``python -m playground``."""

from __future__ import annotations

import sys
import threading

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

    try:
        services = Services.create(settings)  # checks PLAYGROUND_OPENAI_MODELS against the catalog
    except SettingsError as exc:
        print(f"playground: {exc}", file=sys.stderr)
        return 2
    print(startup_line(services.hardware, settings.openai_base_url, settings.openai_served_models), flush=True)
    print(f"[playground] mode={settings.mode} data_dir={settings.data_dir} "
          f"offline={settings.offline} http://{settings.host}:{settings.port}", flush=True)
    # Loading the default model while the server starts makes the first answer as fast as the rest.
    threading.Thread(target=lambda: print(f"[playground] {services.warm_up()}", flush=True),
                     name="warm-up", daemon=True).start()
    try:
        launch(services)
    finally:
        services.close()
    return 0
