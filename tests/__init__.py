"""The test suite.

`HANG_GUARD_S` bounds every subprocess a test starts. It only catches hangs: on a loaded 2-core
machine importing the package's CLIs alone takes 20-190 s, so it is far above any normal run.
"""
HANG_GUARD_S = 900
