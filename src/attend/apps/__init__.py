"""Application pipelines built on attend's runtimes and explanations: support, monitor, recommend, focus.

Each app is a subpackage with its library functions, its HTTP router and its CLI module, which
offers ``register_cli(verbs)`` (its ``attend`` verbs), ``add_serve_options(parser)`` and
``serve_routers(args)`` (what it adds to ``attend serve``). :data:`APPS` names those CLI modules;
the ``attend`` command plugs each in, so a new app never edits the service or the command.
"""

APPS = ("attend.apps.focus.cli", "attend.apps.monitor.cli", "attend.apps.recommend.cli", "attend.apps.support.cli")
