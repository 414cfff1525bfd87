//! The crate's integration tests: test vectors, property tests, replay state.

mod generator;
mod props;
mod validator;
mod vectors;
