"""Markers for tests that read the public data sets of the shared data folder (`$DEBIASKIT_SHARED_DATA`, else
shared/data beside the checkout): without the folder they are skipped and say why, as the professions tests are."""

import pytest

from debiaskit.crows_pairs import CROWS_FILE
from debiaskit.professions import shared_data_dir
from debiaskit.winogender import WINOGENDER_DIR


def _missing(relative: str) -> bool:
    found = shared_data_dir()
    return found is None or not (found / relative).exists()


needs_crows = pytest.mark.skipif(_missing(CROWS_FILE), reason=f"no shared data folder with {CROWS_FILE}")
needs_winogender = pytest.mark.skipif(_missing(WINOGENDER_DIR), reason=f"no shared data folder with {WINOGENDER_DIR}/")
