//! whole-system tests
