//! Warming, NACK and subscription behaviour of the xDS view.
