"""The ``antiphon`` subcommands, one module per model family and one each for serve, say and export.

Each family module (``text``, ``audio``, ``vision`` for digits, ``kws``, ``textdisc``, ``image`` for the image
generators and their judge) has ``add_train`` and ``add_eval`` (``text`` and ``image`` also ``add_sample``), each
adding its subcommand to ``antiphon train|eval|sample`` with a ``func`` that runs it; ``serve``, ``say`` and
``export`` have ``add_command``. :mod:`server.cli` builds the parser from them (``speak`` is what ``say`` runs).
Nothing here imports torch until a command runs.
"""
