//! PSI (pressure stall information): files and triggers.
