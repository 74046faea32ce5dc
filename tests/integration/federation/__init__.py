# A package, so that pytest imports this directory's conftest as `federation.conftest`: other
# test modules import the root one as plain `conftest` (`from conftest import make_settings`).
