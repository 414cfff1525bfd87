//! The crate's integration tests: test vectors, property tests, replay state, and the
//! browsers' call-encryption vectors (e2ee_vectors).

mod e2ee_vectors;
mod generator;
mod props;
mod validator;
mod vectors;
