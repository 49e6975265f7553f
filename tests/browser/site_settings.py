"""Settings of the browser tests' sites: the demo's test settings (``tests/process_settings.py``),
in the language of ``PRESENCE_TEST_LANGUAGE_CODE`` when set (the widget in a zh-hans site)."""

import os

from tests.process_settings import *  # noqa: F403
from tests.process_settings import LANGUAGE_CODE as _SITE_LANGUAGE

LANGUAGE_CODE = os.environ.get("PRESENCE_TEST_LANGUAGE_CODE") or _SITE_LANGUAGE
