"""The ``jaffnet`` console script: collects the subcommands each layer owns (``cli.main``)."""
