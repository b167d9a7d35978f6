"""The bulk write and streamed read tests of tests/unit/authz/test_bulk.py, on PostgreSQL
(COPY, a server-side cursor), with this package's fixtures."""

from __future__ import annotations

from tests.unit.authz.test_bulk import small_batches  # noqa: F401 - a fixture
from tests.unit.authz.test_bulk import test_a_refused_staged_change_writes_nothing  # noqa: F401
from tests.unit.authz.test_bulk import (  # noqa: F401
    test_a_staged_change_across_batch_boundaries_keeps_every_row_in_order,
)
from tests.unit.authz.test_bulk import test_a_streamed_export_writes_the_same_bytes_as_the_snapshots  # noqa: F401
from tests.unit.authz.test_bulk import (  # noqa: F401
    test_a_streamed_read_gives_a_row_stored_twice_once_at_its_first_place,
)
from tests.unit.authz.test_bulk import test_bulk_insert_keeps_every_value_null_and_empty_string  # noqa: F401
from tests.unit.authz.test_bulk import test_bulk_insert_of_no_rows_writes_nothing  # noqa: F401
