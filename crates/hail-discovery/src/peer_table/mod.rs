//! The peer table: the sans-IO discovery state machine (see [`PeerTable`]).
//!
//! One type, [`PeerTable`], with its `impl` blocks split by job:
//!
//! | file | job |
//! |---|---|
//! | `events.rs` | what the driver reports, the table asks and tells (`Action`, `Event`, `PeerTableStats`) |
//! | `state.rs` | the `PeerTable` struct, the records it keeps, queries (`peers`, `resolve` ...) |
//! | `lifecycle.rs` | `start`, `close`, `poll_timeout`, `handle_timeout` |
//! | `beacons.rs` | adverts on the group, the announce schedule (burst, beacons, answers) |
//! | `dial.rs` | whom to dial at which addresses, backoff |
//! | `links.rs` | a link's life, its hello, the one-link-per-pair rule |
//! | `members.rs` | learning devices, names, restarts and duplicates, joins and leaves, goodbyes |
//! | `gossip.rs` | telling joined peers about each other |
//! | `verify.rs` | how many signature checks adverts may cost, per source and in all |

mod beacons;
mod dial;
mod events;
mod gossip;
mod lifecycle;
mod links;
mod members;
mod state;
mod verify;

pub use dial::DIAL_RESERVE;
pub use events::{
    Action, Event, LeaveReason, LinkCloseReason, LinkOrigin, PeerInfo, PeerTableStats,
    TableCloseReason,
};
pub use state::PeerTable;
pub use verify::{VERIFY_PER_SECOND, VERIFY_PER_SOURCE, VERIFY_REPEATS_PER_SECOND};

#[cfg(test)]
mod tests;
