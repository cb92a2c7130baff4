//! privileged tests
