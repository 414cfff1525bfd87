//! The audio forwarding unit (SFU) of the node: big rooms and stages send each person's
//! audio to the node once, and the node forwards it, without decoding, to everyone else.
//!
//! - `driver`: the UDP socket and one str0m connection per participant, behind a handle;
//! - `forward`: the forwarding decisions (who may speak, the loudest few, who gets what on
//!   which slot), sans-IO, tested in simulated time;
//! - `select`: the loudest-few selection with hysteresis;
//! - `slot`: one downstream track's numbering across changes of speaker;
//! - `names`: who the slots of a cascade link carry (the table on its data channel);
//! - `tap`: in debug builds, a copy of what is forwarded, for tests.

pub mod cascade;
pub mod driver;
pub mod forward;
mod link;
pub mod names;
pub mod select;
pub mod slot;
pub mod tap;

#[cfg(test)]
mod tests;

pub use driver::{LinkKey, Sfu, SfuError, SfuEvent, SfuSettings, SfuStats};
pub use forward::{AudioIn, Dropped, Forward, Forwarder, PeerId, SlotChange, SourceId};
