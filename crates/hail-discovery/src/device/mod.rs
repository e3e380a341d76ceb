//! The tokio [`Device`]: the [`PeerTable`](crate::PeerTable) driven over `hail-multicast`
//! (adverts), `hail-link` (one connection per peer) and `hail-rpc` (messages, questions,
//! user calls).
//!
//! | file | job |
//! |---|---|
//! | `builder.rs` | [`DeviceBuilder`], its defaults, `start` (sockets, key, the driver's task) |
//! | `handle.rs` | the [`Device`] handle: accessors, counters, RPC handlers, shutdown |
//! | `messages.rs` | `send` and `ask` ([`Targets`]) and the built-in methods that receive them |
//! | `events.rs` | [`DeviceEvent`], the [`DeviceEvents`] stream, [`Callbacks`] |
//! | `error.rs` | [`DeviceError`], [`SendError`], [`AskError`], [`RunError`] |
//! | `shared.rs` | the state the handle, the driver and the handlers share; a link's entry |
//! | `driver.rs` | the task: one loop over every input, running then draining |
//! | `links.rs` | the driver's links: up, frames, closed, closing (one-link duplicates) |
//! | `dial.rs` | dialing every address at once; failures in a row and their reports |
//! | `clock.rs` | the one clock (tokio's), as the table's `std` instants |

mod builder;
mod clock;
mod dial;
mod driver;
mod error;
mod events;
mod handle;
mod links;
mod messages;
mod shared;

pub use builder::{DEFAULT_GROUP, DeviceBuilder, EVENT_CAPACITY};
pub use error::{AskError, DeviceError, RunError, SendError};
pub use events::{Callbacks, DeviceEvent, DeviceEvents};
pub use handle::{Device, DeviceStats};
pub use messages::Targets;
