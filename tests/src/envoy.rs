//! Where the real Envoy binary is. (Filled in by the differential-test work.)
