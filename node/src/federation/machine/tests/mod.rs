//! The federation machine in simulated time: several machines wired together in memory
//! (`sim`), driven through whole scenarios in milliseconds of wall time.

mod cascade;
mod flood;
mod groups;
mod presence;
mod scale;
mod sim;
mod trust;
