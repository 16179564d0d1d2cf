//! Child processes for tests. (Filled in by the differential-test work.)
