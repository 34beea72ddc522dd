# The browser fixtures live in tests/support/browser.py, loaded for the whole suite by the root
# conftest: one Playwright and one Chromium per test run, shared by every module that drives pages.
